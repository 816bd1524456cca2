//! What the request path knows about tenants, without asking the database.
//!
//! * [`TenantCache`]: each tenant's row and grant facts, loaded once and kept until something
//!   changes. This process drops a tenant at once after its own changes (lifecycle callbacks,
//!   grants, tokens); a background poller ([`spawn_background`]) drops the tenants that another
//!   process (the CLI, another instance) changed, so their changes apply within
//!   `config.cache_refresh` plus one query — well inside the documented 5 seconds
//!   (docs/configuration.md#fixed-timings).
//! * The cache holds facts, never decisions: grants and trials end by time passing, so
//!   activity is evaluated per request with that request's `now`
//!   ([`crate::licensing::GrantFacts::active_at`]).
//! * [`SeenWriter`]: the last request time and the last `lic` seen per tenant go through a
//!   bounded channel to a background task that coalesces them per tenant and writes them
//!   every second, so recording them never slows a request down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::domain::{Flavour, Status};
use crate::forge::fit::FitLicense;
use crate::forge::ids::InstallationId;
use crate::handoff::Handoff;
use crate::licensing::{self, DataSource, GrantFacts, LicenseData, Observations};
use crate::state::AppState;
use crate::store::installations::InstallationRow;
use crate::store::{self, Db, grants, installations};

/// Longest `iss` looked up at all: client keys are UUIDs or `jira:<digits>`; anything longer
/// is not a tenant, and refusing it early keeps junk out of the cache.
pub const MAX_CLIENT_KEY_LEN: usize = 256;

/// How far back each poll looks beyond the previous one: covers commits that finished after
/// the previous poll but carry an earlier `changed_at`, and clock skew between instances.
const POLL_OVERLAP: Duration = Duration::from_secs(5);

/// The same safety-net lifetime as the moka cache's, for the hot map in front of it.
const HOT_TTL: Duration = Duration::from_secs(600);

/// How often the [`SeenWriter`] task writes what it has gathered.
const SEEN_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Messages the request path may queue before new ones are dropped (they only say "seen").
const SEEN_QUEUE: usize = 4096;

/// Source of [`TenantSnapshot::id`].
static NEXT_SNAPSHOT_ID: AtomicU64 = AtomicU64::new(1);

/// A tenant's identity and lifecycle state, as the request path needs them: what
/// [`TenantSnapshot::new`] takes besides license data and grants. Built from the installation
/// row when the cache loads a tenant; tests and benches build it directly.
#[derive(Clone, Default)]
pub struct TenantRecord {
    pub client_key: String,
    pub base_url: String,
    pub display_url: Option<String>,
    pub product_type: String,
    /// `None` (or empty) once uninstalled. Never logged: `Debug` hides it.
    pub shared_secret: Option<String>,
    /// `None` when the stored status is none this version knows; the guard refuses it.
    pub status: Option<Status>,
    pub flavour: Flavour,
    /// The Forge installation id (lower-case bare uuid), when Forge knows the installation.
    pub forge_installation_id: Option<String>,
    /// The licence the last FIT carried, as stored (what a new FIT is compared with).
    pub fit_license: Option<FitLicense>,
}

impl std::fmt::Debug for TenantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRecord")
            .field("client_key", &self.client_key)
            .field("base_url", &self.base_url)
            .field("status", &self.status)
            .field("flavour", &self.flavour)
            .field("forge_installation_id", &self.forge_installation_id)
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// One tenant as the request path sees it.
pub struct TenantSnapshot {
    /// Unique per snapshot in this process, never reused: a token verified with this
    /// snapshot's key stays verified exactly as long as requests still find this snapshot
    /// ([`crate::verified_tokens`]).
    id: u64,
    /// Identity and status as loaded; holds the shared secret (its `Debug` hides it).
    record: TenantRecord,
    /// Facts of every grant, revoked and ended ones included (activity is a matter of `now`).
    grants: Vec<GrantFacts>,
    client_key: Arc<str>,
    /// What the outside sources say ([`Observations::outside`]), as loaded.
    reported: Option<LicenseData>,
    /// The last `lic`: as loaded, then as this process saw it since
    /// ([`TenantSnapshot::known_license`]).
    lic: LicCell,
    /// The licence of the last FIT: its `active` as for `lic` above, and a fingerprint of the
    /// whole licence so that only a change is written at once.
    fit: LicCell,
    fit_fingerprint: AtomicU64,
    forge_installation_id: Option<InstallationId>,
    /// Its ARI, as `/api/whoami` shows it: built once per snapshot, not per request.
    forge_installation_ari: Option<Box<str>>,
    /// Unix second of the last [`Seen`] queued, so a busy tenant queues one per second.
    seen_queued_at: AtomicI64,
    /// The HMAC key of the shared secret, keyed once rather than per request.
    hs256_key: Option<crate::connect::jwt::Hs256Key>,
}

impl std::fmt::Debug for TenantSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSnapshot")
            .field("record", &self.record)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl TenantSnapshot {
    pub fn new(
        record: TenantRecord,
        observations: &Observations,
        grants: Vec<GrantFacts>,
    ) -> TenantSnapshot {
        let [lic, host, marketplace, fit, forge_api] = observations.data();
        let hs256_key = record
            .shared_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| crate::connect::jwt::Hs256Key::new(s.as_bytes()));
        let forge_installation_id = record
            .forge_installation_id
            .as_deref()
            .and_then(InstallationId::parse);
        TenantSnapshot {
            id: NEXT_SNAPSHOT_ID.fetch_add(1, Ordering::Relaxed),
            forge_installation_ari: forge_installation_id.map(|id| id.ari().into()),
            forge_installation_id,
            hs256_key,
            client_key: Arc::from(record.client_key.as_str()),
            reported: licensing::newest([host, marketplace, forge_api]),
            lic: LicCell::new(DataSource::Lic, lic),
            fit: LicCell::new(DataSource::Fit, fit),
            fit_fingerprint: AtomicU64::new(record.fit_license.as_ref().map_or(0, fit_fingerprint)),
            seen_queued_at: AtomicI64::new(0),
            grants,
            record,
        }
    }

    /// The snapshot of a loaded row: its identity, status and license observations.
    fn from_row(row: InstallationRow, grants: Vec<GrantFacts>) -> TenantSnapshot {
        let observations = row.observations();
        // The licence the FITs carried, as stored (no subscription end is kept).
        let fit_license = row.fit_license_seen_at.map(|_| FitLicense {
            subscription_end: None,
            active: row.fit_license_active,
            evaluation: row.fit_license_evaluation.unwrap_or(false),
            trial_end: row.fit_trial_end,
            license_type: row.fit_license_type.clone(),
            entitlement_id: row.fit_entitlement_id.clone(),
            entitlement_number: row.fit_entitlement_number.clone(),
        });
        let record = TenantRecord {
            flavour: row.flavour(),
            forge_installation_id: row.forge_installation_id.clone(),
            fit_license,
            status: Status::parse(&row.status),
            client_key: row.client_key,
            base_url: row.site.base_url,
            display_url: row.site.display_url,
            product_type: row.site.product_type,
            shared_secret: row.shared_secret,
        };
        TenantSnapshot::new(record, &observations, grants)
    }

    /// This snapshot's identity: a reload of the same tenant gets another one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The row's key: the Connect clientKey, or an internal key for an installation only
    /// Forge knows (see [`TenantSnapshot::connect_client_key`]).
    pub fn client_key(&self) -> &Arc<str> {
        &self.client_key
    }

    /// The Connect clientKey; `None` for an installation only Forge knows.
    pub fn connect_client_key(&self) -> Option<&str> {
        (self.record.flavour != Flavour::Forge).then_some(&*self.client_key)
    }

    pub fn flavour(&self) -> Flavour {
        self.record.flavour
    }

    /// The Forge installation id, when Forge knows this installation.
    pub fn forge_installation_id(&self) -> Option<InstallationId> {
        self.forge_installation_id
    }

    /// The same id in ARI form (`ari:cloud:ecosystem::installation/<uuid>`).
    pub fn forge_installation_ari(&self) -> Option<&str> {
        self.forge_installation_ari.as_deref()
    }

    /// The lifecycle status; `None` when the stored one is unknown to this version.
    pub fn status(&self) -> Option<Status> {
        self.record.status
    }

    /// The site's base URL as the last install sent it (`https://acme.atlassian.net`).
    pub fn base_url(&self) -> &str {
        &self.record.base_url
    }

    /// The site's display URL (a custom domain), when the install sent one.
    pub fn display_url(&self) -> Option<&str> {
        self.record.display_url.as_deref()
    }

    /// `jira`, `confluence`, …
    pub fn product_type(&self) -> &str {
        &self.record.product_type
    }

    /// Every grant's facts, revoked and ended ones included.
    pub fn grants(&self) -> &[GrantFacts] {
        &self.grants
    }

    /// The shared secret; `None` once uninstalled.
    pub fn shared_secret(&self) -> Option<&str> {
        self.record
            .shared_secret
            .as_deref()
            .filter(|s| !s.is_empty())
    }

    /// The HS256 key of the shared secret; `None` once uninstalled.
    pub fn hs256_key(&self) -> Option<&crate::connect::jwt::Hs256Key> {
        self.hs256_key.as_ref()
    }

    /// The tenant's last known license: the newest of the last `lic` seen (by this process
    /// since the load, or before it as stored), the product's license endpoint and the
    /// Marketplace — [`licensing::known_license`] with this process's own `lic`.
    pub fn known_license(&self) -> Option<LicenseData> {
        licensing::newest([self.lic.load(), self.fit.load(), self.reported])
    }

    /// Notes the licence of a verified FIT; true when it differs from the last one known
    /// (then it is written at once, and the license view recomputed).
    pub fn observe_fit(&self, license: &FitLicense, at: DateTime<Utc>) -> bool {
        if let Some(active) = license.active {
            self.fit.store(active, at);
        }
        let fingerprint = fit_fingerprint(license);
        self.fit_fingerprint.load(Ordering::Relaxed) != fingerprint
            && self.fit_fingerprint.swap(fingerprint, Ordering::Relaxed) != fingerprint
    }

    /// What the decision needs: the last known licence and the outside sources' alone.
    pub fn known(&self) -> licensing::Known {
        licensing::Known {
            license: self.known_license(),
            // A FIT from an allowed environment counts as an outside source too.
            outside: licensing::newest([self.fit.load(), self.reported]),
        }
    }

    /// Notes a `lic` bound by a verified token; true when it differs from the last one known.
    pub fn observe_lic(&self, active: bool, at: DateTime<Utc>) -> bool {
        self.lic.store(active, at)
    }

    /// True at most once per second: whether this request should queue a [`Seen`].
    fn seen_due(&self, now: DateTime<Utc>) -> bool {
        let second = now.timestamp();
        // Read before writing: a busy tenant's requests then share the cache line instead of
        // each taking it exclusively, and only the first of each second writes.
        self.seen_queued_at.load(Ordering::Relaxed) != second
            && self.seen_queued_at.swap(second, Ordering::Relaxed) != second
    }
}

/// The last `lic` known for a tenant, updated lock-free by requests. The two atomics may be
/// read mid-update by another request; the worst outcome is a timestamp a request too old.
struct LicCell {
    source: DataSource,
    /// 0 unknown, 1 active, 2 anything else.
    state: AtomicU8,
    at_micros: AtomicI64,
}

/// A hash of what a FIT's licence says, never 0 (0 is "nothing recorded").
fn fingerprint_of(
    active: Option<bool>,
    evaluation: bool,
    trial_end: Option<DateTime<Utc>>,
    license_type: Option<&str>,
    entitlement_id: Option<&str>,
    entitlement_number: Option<&str>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        active,
        evaluation,
        trial_end.map(|t| t.timestamp_micros()),
        license_type,
        entitlement_id,
        entitlement_number,
    )
        .hash(&mut h);
    h.finish().max(1)
}

/// The fingerprint of a FIT's licence. Its text fields were cut when the token was read
/// (`FitLicense::from_raw`), as they are stored, so the licence read back from the database and
/// the same licence in the next FIT agree.
fn fit_fingerprint(l: &FitLicense) -> u64 {
    fingerprint_of(
        l.active,
        l.evaluation,
        l.trial_end,
        l.license_type.as_deref(),
        l.entitlement_id.as_deref(),
        l.entitlement_number.as_deref(),
    )
}

impl LicCell {
    fn new(source: DataSource, from_row: Option<LicenseData>) -> LicCell {
        let cell = LicCell {
            source,
            state: AtomicU8::new(0),
            at_micros: AtomicI64::new(0),
        };
        if let Some(d) = from_row {
            cell.store(d.active, d.at);
        }
        cell
    }

    fn store(&self, active: bool, at: DateTime<Utc>) -> bool {
        self.at_micros
            .store(at.timestamp_micros(), Ordering::Relaxed);
        let state = if active { 1 } else { 2 };
        self.state.swap(state, Ordering::Relaxed) != state
    }

    fn load(&self) -> Option<LicenseData> {
        let active = match self.state.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => return None,
        };
        Some(LicenseData {
            source: self.source,
            at: DateTime::from_timestamp_micros(self.at_micros.load(Ordering::Relaxed))?,
            active,
            evaluation: false,
        })
    }
}

/// The per-process tenant cache. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct TenantCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    db: Db,
    /// Decrypts each tenant's shared secret once, when it is loaded.
    secrets: Arc<crate::secrets::Keyring>,
    /// `None` remembers an unknown `iss` too, so junk tokens do not each cost a query; the
    /// cache's admission policy (TinyLFU) keeps a flood of them from evicting real tenants.
    entries: moka::future::Cache<String, Option<Arc<TenantSnapshot>>>,
    /// Known tenants only, in front of `entries`: a read lock and a hash instead of moka's
    /// per-read bookkeeping, which is most of a cached lookup's cost on the request path.
    /// Only tenants that exist in the database enter it (bounded by the registry's size);
    /// unknown `iss` values stay in `entries`, whose admission policy resists floods.
    /// Invalidations remove from it under its write lock, and a load is admitted under the
    /// same lock only if no invalidation happened since the load began.
    hot: std::sync::RwLock<HashMap<String, (std::time::Instant, Arc<TenantSnapshot>)>>,
    /// Bumped by every invalidation. A load that started before a bump may have read data
    /// older than the change, so it is used once but not cached.
    generation: AtomicU64,
    /// Forge installation id → the key of its row, so a FIT finds its tenant in memory. Only
    /// a hint: [`TenantCache::get_by_installation`] checks that the snapshot it leads to still
    /// carries that installation id (rows are re-keyed or re-linked rarely, never silently).
    by_installation: std::sync::RwLock<HashMap<InstallationId, Arc<str>>>,
}

impl TenantCache {
    pub fn new(db: Db, secrets: Arc<crate::secrets::Keyring>) -> TenantCache {
        TenantCache {
            inner: Arc::new(CacheInner {
                db,
                secrets,
                entries: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    // A safety net only: every change this code knows of invalidates at
                    // once or through the poller.
                    .time_to_live(Duration::from_secs(600))
                    .build(),
                hot: std::sync::RwLock::new(HashMap::new()),
                generation: AtomicU64::new(0),
                by_installation: std::sync::RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The tenant with this client key, from memory when possible. `Ok(None)` for an
    /// unknown tenant; `Err` only when the database could not be asked.
    pub async fn get(&self, client_key: &str) -> sqlx::Result<Option<Arc<TenantSnapshot>>> {
        if client_key.is_empty() || client_key.len() > MAX_CLIENT_KEY_LEN {
            return Ok(None);
        }
        if let Some((at, hit)) = self.hot_read().get(client_key)
            && at.elapsed() < HOT_TTL
        {
            return Ok(Some(hit.clone()));
        }
        let generation = self.inner.generation.load(Ordering::Acquire);
        if let Some(hit) = self.inner.entries.get(client_key).await {
            if let Some(tenant) = &hit {
                self.admit(client_key, tenant, generation);
            }
            return Ok(hit);
        }
        let loaded = load(&self.inner.db, &self.inner.secrets, client_key)
            .await?
            .map(Arc::new);
        if self.inner.generation.load(Ordering::Acquire) == generation {
            self.inner
                .entries
                .insert(client_key.to_owned(), loaded.clone())
                .await;
            if let Some(tenant) = &loaded {
                self.admit(client_key, tenant, generation);
            }
        }
        Ok(loaded)
    }

    /// The installation with this Forge installation id, from memory when possible (two hash
    /// look-ups, no database round trip). `Ok(None)` when no row holds it.
    pub async fn get_by_installation(
        &self,
        id: InstallationId,
    ) -> sqlx::Result<Option<Arc<TenantSnapshot>>> {
        let hint = self
            .inner
            .by_installation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some(key) = hint
            && let Some(tenant) = self.get(&key).await?
            && tenant.forge_installation_id() == Some(id)
        {
            return Ok(Some(tenant));
        }
        let Some(key) =
            crate::store::forge::client_key_by_installation(&self.inner.db, &id.as_key()).await?
        else {
            return Ok(None);
        };
        let key: Arc<str> = Arc::from(key.as_str());
        let tenant = self.get(&key).await?;
        if tenant
            .as_ref()
            .is_some_and(|t| t.forge_installation_id() == Some(id))
        {
            self.inner
                .by_installation
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, key);
            return Ok(tenant);
        }
        // The row changed between the two reads (re-keyed or re-linked): read it once more,
        // uncached.
        self.invalidate(&key).await;
        self.get(&key)
            .await
            .map(|t| t.filter(|t| t.forge_installation_id() == Some(id)))
    }

    /// Drops one tenant; the next request for it reads the database again.
    ///
    /// The backing cache goes first: a reader that fetched the old value from it before this
    /// call read the generation before the bump below, so it cannot admit that value.
    pub async fn invalidate(&self, client_key: &str) {
        self.inner.entries.invalidate(client_key).await;
        let mut hot = self.hot_write();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        hot.remove(client_key);
    }

    /// Drops every tenant (after a bulk change such as a Marketplace sync).
    pub fn invalidate_all(&self) {
        self.inner.entries.invalidate_all();
        let mut hot = self.hot_write();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        hot.clear();
    }

    /// Puts a loaded tenant in the hot map unless an invalidation happened since `generation`
    /// was read (checked under the write lock that invalidations also take).
    fn admit(&self, client_key: &str, tenant: &Arc<TenantSnapshot>, generation: u64) {
        let mut hot = self.hot_write();
        if self.inner.generation.load(Ordering::Acquire) == generation {
            hot.insert(
                client_key.to_owned(),
                (std::time::Instant::now(), tenant.clone()),
            );
        }
    }

    fn hot_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, (std::time::Instant, Arc<TenantSnapshot>)>>
    {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still
        // a valid cache.
        self.inner.hot.read().unwrap_or_else(|e| e.into_inner())
    }

    fn hot_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (std::time::Instant, Arc<TenantSnapshot>)>>
    {
        self.inner.hot.write().unwrap_or_else(|e| e.into_inner())
    }
}

async fn load(
    db: &Db,
    secrets: &crate::secrets::Keyring,
    client_key: &str,
) -> sqlx::Result<Option<TenantSnapshot>> {
    let Some(mut row) = installations::get(db, client_key).await? else {
        return Ok(None);
    };
    crate::secrets::open_row_secret(secrets, &mut row);
    let facts = grants::for_client(db, client_key)
        .await?
        .iter()
        .filter_map(grants::GrantRow::facts)
        .collect();
    Ok(Some(TenantSnapshot::from_row(row, facts)))
}

/// What one verified request tells the registry.
#[derive(Debug, Clone)]
struct Seen {
    client_key: Arc<str>,
    at: DateTime<Utc>,
    /// `Some(active)` when the token bound a `lic`.
    lic: Option<bool>,
    /// The `lic` differs from the last one known: the license view must be recomputed.
    lic_changed: bool,
    /// The licence a verified FIT carried, and whether it differs from the last one known.
    fit: Option<FitLicense>,
    fit_changed: bool,
}

/// The request side of the "last seen" writer: queues without waiting, drops when full.
/// Its task is started by [`spawn_background`]; until then messages wait in the queue.
#[derive(Default)]
pub struct SeenWriter(Handoff<Seen, SEEN_QUEUE>);

impl SeenWriter {
    /// Records a verified request of `tenant` at `now`, with the `lic` its token bound.
    /// Never blocks and never fails the request: at worst a "seen" is lost.
    pub fn saw(&self, tenant: &TenantSnapshot, lic: Option<bool>, now: DateTime<Utc>) {
        let lic_changed = lic.is_some_and(|active| tenant.observe_lic(active, now));
        if lic_changed || tenant.seen_due(now) {
            let _ = self.0.send(Seen {
                client_key: tenant.client_key.clone(),
                at: now,
                lic,
                lic_changed,
                fit: None,
                fit_changed: false,
            });
        }
    }

    /// Records a request of `tenant` verified by a FIT at `now`, with the licence the token
    /// carried (`None` when it carried none: nothing is learnt then). Like [`SeenWriter::saw`],
    /// it writes nothing on the request path: a changed licence is queued at once, otherwise
    /// at most one "seen" per second.
    pub fn saw_fit(
        &self,
        tenant: &TenantSnapshot,
        license: Option<&FitLicense>,
        now: DateTime<Utc>,
    ) {
        let fit_changed = license.is_some_and(|l| tenant.observe_fit(l, now));
        if fit_changed || tenant.seen_due(now) {
            let _ = self.0.send(Seen {
                client_key: tenant.client_key.clone(),
                at: now,
                lic: None,
                lic_changed: false,
                fit: license.cloned(),
                fit_changed,
            });
        }
    }
}

/// Starts the tasks behind [`TenantCache`] and [`SeenWriter`]: the poller of changes made by
/// other processes, and the "seen" writer. Call once per [`AppState`] (a second call starts a
/// second poller and no second writer). Each task ends when the database pool is closed; the
/// poller also when the cache is dropped.
pub fn spawn_background(state: &AppState) {
    let weak = Arc::downgrade(&state.tenants.inner);
    tokio::spawn(poll_changes(
        weak.clone(),
        state.db.clone(),
        state.config.cache_refresh,
    ));
    let rx = state.seen.0.take_receiver();
    if let Some(rx) = rx {
        tokio::spawn(write_seen(rx, state.db.clone(), weak));
    }
}

async fn poll_changes(cache: Weak<CacheInner>, db: Db, every: Duration) {
    let overlap = chrono::Duration::from_std(POLL_OVERLAP).unwrap_or_default();
    let mut since = store::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = cache.upgrade() else { return };
        if db.is_closed() {
            return;
        }
        let started = store::now();
        match installations::changed_since(&db, since - overlap).await {
            Ok(keys) => {
                let cache = TenantCache { inner };
                for key in keys {
                    cache.invalidate(&key).await;
                }
                since = started;
            }
            Err(e) => tracing::warn!(error = %e, "polling for tenant changes failed; will retry"),
        }
    }
}

#[derive(Default)]
struct Pending {
    last_at: Option<DateTime<Utc>>,
    lic: Option<(bool, DateTime<Utc>)>,
    lic_changed: bool,
    fit: Option<(FitLicense, DateTime<Utc>)>,
    fit_changed: bool,
}

async fn write_seen(mut rx: mpsc::Receiver<Seen>, db: Db, cache: Weak<CacheInner>) {
    let mut pending: HashMap<Arc<str>, Pending> = HashMap::new();
    let mut tick = tokio::time::interval(SEEN_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(seen) => {
                    let p = pending.entry(seen.client_key).or_default();
                    p.last_at = p.last_at.max(Some(seen.at));
                    if let Some(active) = seen.lic {
                        p.lic = Some((active, seen.at));
                    }
                    p.lic_changed |= seen.lic_changed;
                    if let Some(fit) = seen.fit {
                        p.fit = Some((fit, seen.at));
                    }
                    p.fit_changed |= seen.fit_changed;
                }
                None => {
                    flush(&db, &cache, std::mem::take(&mut pending)).await;
                    return;
                }
            },
            _ = tick.tick() => {
                if db.is_closed() {
                    return;
                }
                flush(&db, &cache, std::mem::take(&mut pending)).await;
            }
        }
    }
}

async fn flush(db: &Db, cache: &Weak<CacheInner>, pending: HashMap<Arc<str>, Pending>) {
    for (key, p) in pending {
        if let Err(e) = flush_one(db, &key, &p).await {
            tracing::warn!(client_key = %key, error = %e, "recording last seen failed");
            continue;
        }
        if p.lic_changed || p.fit_changed {
            if let Err(e) = crate::registry::license_view::refresh(db, &key).await {
                tracing::warn!(client_key = %key, error = %e, "license view refresh failed");
            }
            // A reload that raced with this write may hold the older `lic`: drop it.
            if let Some(inner) = cache.upgrade() {
                TenantCache { inner }.invalidate(&key).await;
            }
        }
    }
}

async fn flush_one(db: &Db, key: &str, p: &Pending) -> sqlx::Result<()> {
    if let Some((fit, at)) = &p.fit {
        crate::store::forge::record_fit_license(db, key, *at, fit, p.fit_changed).await?;
    }
    let lic_at = match p.lic {
        Some((active, at)) => {
            let lic = if active { "active" } else { "none" };
            installations::record_seen(db, key, at, Some(lic)).await?;
            Some(at)
        }
        None => None,
    };
    match p.last_at {
        Some(last) if Some(last) > lic_at => installations::record_seen(db, key, last, None).await,
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn record() -> TenantRecord {
        TenantRecord {
            client_key: "ck".into(),
            shared_secret: Some("secret".into()),
            status: Some(Status::Enabled),
            ..TenantRecord::default()
        }
    }

    #[test]
    fn known_license_is_the_newest_of_lic_and_reported_data() {
        let o = Observations {
            host_active: Some(false),
            host_checked_at: Some(t(10)),
            lic: Some("active".into()),
            lic_seen_at: Some(t(5)),
            ..Observations::default()
        };
        let snap = TenantSnapshot::new(record(), &o, vec![]);
        assert_eq!(snap.known_license(), licensing::known_license(&o));
        assert!(!snap.known_license().unwrap().active, "host data is newer");

        // A lic seen by this process after the load is newer than the host data and wins;
        // it is the same value as the row's, so it is no change for the license view.
        assert!(!snap.observe_lic(true, t(20)));
        let k = snap.known_license().unwrap();
        assert!(k.active);
        assert_eq!(k.source, DataSource::Lic);
        assert!(
            snap.observe_lic(false, t(22)),
            "a different value is a change"
        );
        assert!(!snap.known_license().unwrap().active);

        // With nothing known, the first lic seen is a change.
        let fresh = TenantSnapshot::new(record(), &Observations::default(), vec![]);
        assert_eq!(fresh.known_license(), None);
        assert!(fresh.observe_lic(true, t(1)));
    }

    #[test]
    fn seen_is_due_once_per_second() {
        let snap = TenantSnapshot::new(record(), &Observations::default(), vec![]);
        assert!(snap.seen_due(t(1)));
        assert!(!snap.seen_due(t(1)));
        assert!(snap.seen_due(t(2)));
    }

    #[test]
    fn a_fit_licence_and_its_stored_record_have_the_same_fingerprint() {
        // As a token's licence is read: long text fields are cut there, once.
        let long = "é".repeat(300);
        let license = FitLicense::from_raw(crate::forge::fit::RawLicense {
            active: Some(true),
            kind: Some(long.clone()),
            ccp_entitlement_id: Some("E-1".into()),
            ccp_entitlement_slug: Some(long),
            ..Default::default()
        });
        assert_eq!(
            license.license_type.as_deref().map(|s| s.chars().count()),
            Some(200)
        );
        // What the row gives back: the same fields, no subscription end.
        let stored = FitLicense {
            subscription_end: None,
            ..license.clone()
        };
        assert_eq!(fit_fingerprint(&license), fit_fingerprint(&stored));
        let other = FitLicense {
            active: Some(false),
            ..license
        };
        assert_ne!(fit_fingerprint(&other), fit_fingerprint(&stored));
    }

    #[test]
    fn the_installation_id_is_kept_in_both_forms() {
        let uuid = "a1b2c3d4-0000-4e5f-8a9b-0c1d2e3f4a5b";
        let mut r = record();
        r.forge_installation_id = Some(uuid.into());
        let snap = TenantSnapshot::new(r, &Observations::default(), vec![]);
        assert_eq!(
            snap.forge_installation_id().map(|id| id.as_key()),
            Some(uuid.to_owned())
        );
        assert_eq!(
            snap.forge_installation_ari(),
            Some(format!("ari:cloud:ecosystem::installation/{uuid}").as_str())
        );
        let connect = TenantSnapshot::new(record(), &Observations::default(), vec![]);
        assert_eq!(connect.forge_installation_ari(), None);
    }

    #[test]
    fn an_uninstalled_row_has_no_secret() {
        let mut r = record();
        r.shared_secret = None;
        r.status = Some(Status::Uninstalled);
        let snap = TenantSnapshot::new(r, &Observations::default(), vec![]);
        assert_eq!(snap.shared_secret(), None);
        assert_eq!(snap.status(), Some(Status::Uninstalled));
    }
}
