//! Forge identifiers. Atlassian writes the same id two ways: the FIT carries ARIs
//! (`ari:cloud:ecosystem::app/<uuid>`, `ari:cloud:ecosystem::installation/<uuid>`) while
//! lifecycle payloads and the developer console show the bare uuid. Both are accepted
//! everywhere and normalised to the uuid, so that one installation never becomes two rows.

use std::fmt;

use uuid::Uuid;

const APP_PREFIX: &str = "ari:cloud:ecosystem::app/";
const INSTALLATION_PREFIX: &str = "ari:cloud:ecosystem::installation/";

/// Parses `<prefix><uuid>` or a bare uuid (any case, hyphenated only: a uuid in another
/// spelling is not what Forge sends, and accepting it would make two spellings of one id).
fn parse_with_prefix(value: &str, prefix: &str) -> Option<Uuid> {
    let value = value.trim();
    let bare = match value.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &value[prefix.len()..],
        _ => value,
    };
    if bare.len() != 36 {
        return None;
    }
    Uuid::parse_str(bare).ok()
}

/// A Forge app id (`FORGE_APP_ID`, the FIT's `aud` and `app.id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppId(Uuid);

impl AppId {
    /// `ari:cloud:ecosystem::app/<uuid>` or the bare uuid.
    pub fn parse(value: &str) -> Option<AppId> {
        parse_with_prefix(value, APP_PREFIX).map(AppId)
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The ARI form, as the FIT's `aud` carries it.
    pub fn ari(&self) -> String {
        format!("{APP_PREFIX}{}", self.0.hyphenated())
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppId({})", self.0.hyphenated())
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ari())
    }
}

/// A Forge installation id (`app.installationId` of a FIT, `installationId` of a Connect
/// `installed` payload, `id` of a Forge lifecycle event). It changes when a site reinstalls the
/// app; the site's `cloudId` does not.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstallationId(Uuid);

impl InstallationId {
    /// `ari:cloud:ecosystem::installation/<uuid>` or the bare uuid.
    pub fn parse(value: &str) -> Option<InstallationId> {
        parse_with_prefix(value, INSTALLATION_PREFIX).map(InstallationId)
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The stored form: the lower-case hyphenated uuid.
    pub fn as_key(&self) -> String {
        self.0.hyphenated().to_string()
    }

    pub fn ari(&self) -> String {
        format!("{INSTALLATION_PREFIX}{}", self.0.hyphenated())
    }
}

impl fmt::Debug for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstallationId({})", self.0.hyphenated())
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// A Forge environment type (`app.environment.type`), one of the three Forge knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvironmentType {
    Development,
    Staging,
    Production,
}

impl EnvironmentType {
    pub const ALL: [EnvironmentType; 3] = [
        EnvironmentType::Development,
        EnvironmentType::Staging,
        EnvironmentType::Production,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentType::Development => "DEVELOPMENT",
            EnvironmentType::Staging => "STAGING",
            EnvironmentType::Production => "PRODUCTION",
        }
    }

    /// Case-insensitive: the docs write the types in capitals, examples vary.
    pub fn parse(value: &str) -> Option<EnvironmentType> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0f5a3f2e-6c9b-4c1e-9d1e-1234567890ab";

    #[test]
    fn ari_and_bare_uuid_are_the_same_id() {
        let ari = AppId::parse(&format!("ari:cloud:ecosystem::app/{UUID}")).unwrap();
        let bare = AppId::parse(UUID).unwrap();
        let upper = AppId::parse(&UUID.to_uppercase()).unwrap();
        assert_eq!(ari, bare);
        assert_eq!(ari, upper);
        assert_eq!(ari.ari(), format!("ari:cloud:ecosystem::app/{UUID}"));

        let inst = InstallationId::parse(&format!("ari:cloud:ecosystem::installation/{UUID}"));
        assert_eq!(inst, InstallationId::parse(UUID));
        assert_eq!(inst.unwrap().as_key(), UUID);
    }

    #[test]
    fn other_things_are_not_ids() {
        for bad in [
            "",
            "not-a-uuid",
            "ari:cloud:ecosystem::installation/0f5a3f2e-6c9b-4c1e-9d1e-1234567890ab",
            "0f5a3f2e6c9b4c1e9d1e1234567890ab",
            "{0f5a3f2e-6c9b-4c1e-9d1e-1234567890ab}",
            "ari:cloud:ecosystem::app/",
        ] {
            assert_eq!(AppId::parse(bad), None, "{bad}");
        }
        // An app ARI is not an installation id.
        assert_eq!(
            InstallationId::parse(&format!("ari:cloud:ecosystem::app/{UUID}")),
            None
        );
    }

    #[test]
    fn environment_types() {
        assert_eq!(
            EnvironmentType::parse("production"),
            Some(EnvironmentType::Production)
        );
        assert_eq!(EnvironmentType::parse("PRODUCTON"), None);
    }
}
