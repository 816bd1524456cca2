//! Small domain types, parsed once at the edge so invalid values cannot travel further.

use std::fmt;

/// A tenant's lifecycle status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Installed,
    Enabled,
    Disabled,
    Uninstalled,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Installed,
        Status::Enabled,
        Status::Disabled,
        Status::Uninstalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Installed => "installed",
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
            Status::Uninstalled => "uninstalled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle event type; the route decides which one is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    Installed,
    Uninstalled,
    Enabled,
    Disabled,
}

impl LifecycleEvent {
    pub const fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::Installed => "installed",
            LifecycleEvent::Uninstalled => "uninstalled",
            LifecycleEvent::Enabled => "enabled",
            LifecycleEvent::Disabled => "disabled",
        }
    }
}

/// The kind of a vendor grant: what the licence rules ([`crate::licensing`]) and the store
/// both name, so it lives here rather than in either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    Free,
    TrialExtension,
    AccessToken,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Free => "free",
            GrantKind::TrialExtension => "trial_extension",
            GrantKind::AccessToken => "access_token",
        }
    }

    pub fn parse(s: &str) -> Option<GrantKind> {
        [
            GrantKind::Free,
            GrantKind::TrialExtension,
            GrantKind::AccessToken,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The registry's license state of an installation, computed by [`crate::licensing::view`]
/// and stored (materialised) so the admin filters are plain SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseState {
    Active,
    Trial,
    Free,
    Unlicensed,
}

impl LicenseState {
    pub const ALL: [LicenseState; 4] = [
        LicenseState::Active,
        LicenseState::Trial,
        LicenseState::Free,
        LicenseState::Unlicensed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Active => "active",
            LicenseState::Trial => "trial",
            LicenseState::Free => "free",
            LicenseState::Unlicensed => "unlicensed",
        }
    }

    pub fn parse(s: &str) -> Option<LicenseState> {
        LicenseState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Which platform an installation is known through (docs/forge.md).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// A Connect tenant: lifecycle callbacks and Connect JWTs only.
    #[default]
    Connect,
    /// A Connect tenant that Forge also knows by an installation id (Connect on Forge).
    ConnectOnForge,
    /// Known only from Forge Invocation Tokens and Forge events: no Connect clientKey.
    Forge,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::Connect, Flavour::ConnectOnForge, Flavour::Forge];

    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Connect => "connect",
            Flavour::ConnectOnForge => "connect_on_forge",
            Flavour::Forge => "forge",
        }
    }

    pub fn parse(s: &str) -> Option<Flavour> {
        Flavour::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lower-case host of a URL, used to join Marketplace rows by `cloudSiteHostname`.
pub fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.to_ascii_lowercase())
}

/// The number of users in a Marketplace tier: its leading number, thousands separators
/// allowed, with or without a space before the unit (`"10 Users"` and `"10Users"` → 10,
/// `"1,000 Users"` → 1000); tiers without one (`"Unlimited Users"`, `"Evaluation"`,
/// `"Subscription"`) → `None`. The one rule for the sync and the registry's views.
pub fn tier_user_count(tier: &str) -> Option<i64> {
    let digits: String = tier
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_count_is_the_leading_number_of_the_tier() {
        assert_eq!(tier_user_count("10 Users"), Some(10));
        assert_eq!(tier_user_count("10Users"), Some(10));
        assert_eq!(tier_user_count(" 10 Users "), Some(10));
        assert_eq!(tier_user_count("100 Users"), Some(100));
        assert_eq!(tier_user_count("1,000 Users"), Some(1000));
        assert_eq!(tier_user_count("1,000Users"), Some(1000));
        assert_eq!(tier_user_count("Unlimited Users"), None);
        assert_eq!(tier_user_count("Evaluation"), None);
        assert_eq!(tier_user_count("Subscription"), None);
        assert_eq!(tier_user_count("-5 Users"), None);
        assert_eq!(tier_user_count(""), None);
    }

    #[test]
    fn status_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("Enabled"), None);
        for f in Flavour::ALL {
            assert_eq!(Flavour::parse(f.as_str()), Some(f));
        }
        assert_eq!(Flavour::parse("Forge"), None);
    }

    #[test]
    fn host_is_lower_case_without_path() {
        assert_eq!(
            host_of("https://Acme.atlassian.net/wiki").as_deref(),
            Some("acme.atlassian.net")
        );
        assert_eq!(host_of("not a url"), None);
    }
}
