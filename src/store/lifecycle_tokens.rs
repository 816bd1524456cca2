//! The `lifecycle_tokens` table: signed lifecycle tokens already applied, by a hash of their
//! signature, with a hash of the body they came with (docs/operations.md#lifecycle-replay).
//!
//! In the database rather than in memory so that every instance behind the load balancer
//! knows what another one applied.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// One presentation of a verified lifecycle token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUse {
    /// SHA-256 (hex) of the token's signature.
    pub signature_hash: String,
    /// SHA-256 (hex) of the request body, byte for byte.
    pub body_hash: String,
    /// Until when the token is accepted (`exp` plus the leeway); the row is kept until then.
    pub expires_at: DateTime<Utc>,
}

impl TokenUse {
    /// `signature` is the token's third segment (base64url, as received); `body` the raw body.
    pub fn new(signature: &str, body: &[u8], expires_at: DateTime<Utc>) -> TokenUse {
        TokenUse {
            signature_hash: hex::encode(Sha256::digest(signature.as_bytes())),
            body_hash: hex::encode(Sha256::digest(body)),
            expires_at,
        }
    }
}

/// What the table says of a presentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Never applied: it is recorded now, inside the caller's transaction.
    Fresh,
    /// Applied before with the same body: a retry.
    Retry,
    /// Applied before with another body: a replay.
    OtherBody,
}

/// Deletes the rows of expired tokens: they cannot be presented again.
pub const DELETE_EXPIRED: &str = "DELETE FROM lifecycle_tokens WHERE expires_at < $1";
/// Records a token; affects no row when its signature is there already.
pub const INSERT: &str = "INSERT INTO lifecycle_tokens (signature_hash, body_hash, expires_at)
     VALUES ($1, $2, $3) ON CONFLICT (signature_hash) DO NOTHING";
pub const BODY_OF: &str = "SELECT body_hash FROM lifecycle_tokens WHERE signature_hash = $1";

/// `claim!(tx, token, now)`: records `token` inside the caller's write transaction `tx` and
/// evaluates (awaiting) to `sqlx::Result<Claim>` — [`Claim::Fresh`] when it was never applied, else how
/// it was seen. Expired rows go first, so the table holds only tokens still inside their
/// lifetime. On PostgreSQL a concurrent transaction inserting the same signature makes the
/// insert wait for it and then see its row: two instances cannot both take a token as fresh.
/// A macro rather than a function because it runs on either backend's transaction (inside
/// `on_db!`), as the same three statements.
macro_rules! claim {
    ($tx:expr, $token:expr, $now:expr) => {{
        let claimed: sqlx::Result<$crate::store::lifecycle_tokens::Claim> = async {
            use $crate::store::lifecycle_tokens::{BODY_OF, Claim, DELETE_EXPIRED, INSERT};
            let token: &$crate::store::lifecycle_tokens::TokenUse = $token;
            sqlx::query(DELETE_EXPIRED)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
            let inserted = sqlx::query(INSERT)
                .bind(&token.signature_hash)
                .bind(&token.body_hash)
                .bind(token.expires_at)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                return sqlx::Result::Ok(Claim::Fresh);
            }
            let body: String = sqlx::query_scalar(BODY_OF)
                .bind(&token.signature_hash)
                .fetch_one(&mut *$tx)
                .await?;
            sqlx::Result::Ok(if body == token.body_hash {
                Claim::Retry
            } else {
                Claim::OtherBody
            })
        }
        .await;
        claimed
    }};
}
pub(crate) use claim;
