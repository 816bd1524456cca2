//! The one error type of the registry's operations, shared by the admin API and the CLI.
//!
//! It says *what* went wrong in the registry's own terms (which field, which entity), not how
//! to answer it: the HTTP status and JSON body are chosen in one place,
//! `From<registry::Error> for error::ApiError`, and the CLI turns a field into its flag through
//! its own table (`cli::FLAGS`). So the registry depends on neither HTTP nor the command line,
//! and nobody has to take a message apart to learn which field it names.

/// Why a registry operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter out of range or malformed (400). `field` is its name in the admin API;
    /// the message is `"{field}: {why}"`, so a 400 always starts with the field it is about.
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    /// The thing acted on does not exist (404).
    #[error("no {} with {} {key:?}", entity.noun(), entity.key_name())]
    NotFound { entity: Entity, key: String },
    /// The change would clash with what is there (409); the message says with what.
    #[error("{0}")]
    Conflict(String),
    /// An access token that cannot be redeemed: 400 when it is unusable, 409 when another
    /// site holds it (see [`Refusal::is_conflict`]).
    #[error(transparent)]
    AccessToken(#[from] Refusal),
    /// No admin credentials, or credentials that are not valid (401).
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Anything else that is not the caller's fault (e.g. a CSV writer failing).
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl Error {
    /// A [`Error::Invalid`] for `field`.
    pub fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            why: why.into(),
        }
    }

    /// A [`Error::NotFound`] for the `entity` named `key`.
    pub fn not_found(entity: Entity, key: impl Into<String>) -> Self {
        Error::NotFound {
            entity,
            key: key.into(),
        }
    }
}

/// What was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Installation,
    Grant,
    AccessToken,
    AdminToken,
}

impl Entity {
    fn noun(self) -> &'static str {
        match self {
            Entity::Installation => "installation",
            Entity::Grant => "grant",
            Entity::AccessToken => "access token",
            Entity::AdminToken => "admin token",
        }
    }

    /// The name of the key it is looked up by.
    fn key_name(self) -> &'static str {
        match self {
            Entity::Installation => "client_key",
            Entity::Grant | Entity::AccessToken | Entity::AdminToken => "id",
        }
    }
}

/// Why an access token could not be redeemed (docs: the redeem rules in
/// [`crate::registry::grants::redeemable`]). Each message starts with `token:`, the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("token: unknown access token")]
    Unknown,
    #[error("token: the access token has expired")]
    Expired,
    #[error("token: the access token has been revoked")]
    Revoked,
    #[error("token: the access token was already redeemed by another site")]
    RedeemedByOther,
    #[error("token: the access token is meant for another site")]
    BoundToOther,
}

impl Refusal {
    /// True when the token is fine but belongs to another site: a conflict, not a bad request.
    pub fn is_conflict(self) -> bool {
        matches!(self, Refusal::RedeemedByOther | Refusal::BoundToOther)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_or_the_entity() {
        assert_eq!(
            Error::invalid("days", "must be between 1 and 365").to_string(),
            "days: must be between 1 and 365"
        );
        assert_eq!(
            Error::not_found(Entity::Installation, "ck").to_string(),
            "no installation with client_key \"ck\""
        );
        assert_eq!(
            Error::not_found(Entity::AdminToken, "x").to_string(),
            "no admin token with id \"x\""
        );
        assert_eq!(
            Error::from(Refusal::Expired).to_string(),
            "token: the access token has expired"
        );
    }
}
