//! Small domain types, parsed once at the edge so invalid values cannot travel further.

/// An enum whose values are stored, sent and shown as fixed snake_case words: writes the enum
/// with `ALL` (every value, in order), `as_str`, `parse` (the exact word, or `None`) and
/// `Display`, from one list of `Variant => "word"` pairs.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $word => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// A tenant's lifecycle status.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Status {
        Installed => "installed",
        Enabled => "enabled",
        Disabled => "disabled",
        Uninstalled => "uninstalled",
    }
}

text_enum! {
    /// A lifecycle event type; the route decides which one is expected.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum LifecycleEvent {
        Installed => "installed",
        Uninstalled => "uninstalled",
        Enabled => "enabled",
        Disabled => "disabled",
    }
}

text_enum! {
    /// The kind of a vendor grant: what the licence rules ([`crate::licensing`]) and the store
    /// both name, so it lives here rather than in either.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum GrantKind {
        Free => "free",
        TrialExtension => "trial_extension",
        AccessToken => "access_token",
    }
}

text_enum! {
    /// The registry's license state of an installation, computed by [`crate::licensing::view`]
    /// and stored (materialised) so the admin filters are plain SQL.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum LicenseState {
        Active => "active",
        Trial => "trial",
        Free => "free",
        Unlicensed => "unlicensed",
    }
}

text_enum! {
    /// Which platform an installation is known through (docs/forge.md).
    #[derive(
        Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum Flavour {
        /// A Connect tenant: lifecycle callbacks and Connect JWTs only.
        #[default]
        Connect => "connect",
        /// A Connect tenant that Forge also knows by an installation id (Connect on Forge).
        ConnectOnForge => "connect_on_forge",
        /// Known only from Forge Invocation Tokens and Forge events: no Connect clientKey.
        Forge => "forge",
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

    /// The word `as_str`/`parse` use is the word the JSON carries (`serde(rename_all)`), for
    /// every value of every enum that has both.
    #[test]
    fn the_words_are_the_json_words() {
        fn check<T: serde::Serialize + Copy + std::fmt::Debug>(
            all: &[T],
            word: fn(T) -> &'static str,
        ) {
            for &v in all {
                assert_eq!(serde_json::to_value(v).unwrap(), word(v), "{v:?}");
            }
        }
        check(&Status::ALL, Status::as_str);
        check(&Flavour::ALL, Flavour::as_str);
        check(&GrantKind::ALL, GrantKind::as_str);
        check(&LicenseState::ALL, LicenseState::as_str);
        check(
            &crate::licensing::Source::ALL,
            crate::licensing::Source::as_str,
        );
        check(
            &crate::licensing::ViewSource::ALL,
            crate::licensing::ViewSource::as_str,
        );
        assert_eq!(Status::parse("Enabled"), None, "exact words only");
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
