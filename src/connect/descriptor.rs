//! The app descriptor served at `GET /atlassian-connect.json`.
//!
//! The template is compiled into the binary from the repository's `atlassian-connect.json`
//! (or read from `DESCRIPTOR_PATH` at start-up); `baseUrl`, `key` and `links.self` are set
//! from the configuration when served.

use serde_json::Value;

/// The repository's descriptor, compiled in so the binary runs from any directory.
pub const BUILTIN_TEMPLATE: &str = include_str!("../../atlassian-connect.json");

#[derive(Clone, Debug)]
pub struct Descriptor {
    /// The rendered descriptor without an access token.
    rendered: Value,
}

impl Descriptor {
    /// Parses the template and fills in the configured base URL and key.
    pub fn new(template: &str, base_url: &str, app_key: &str) -> anyhow::Result<Self> {
        let mut v: Value = serde_json::from_str(template)
            .map_err(|e| anyhow::anyhow!("descriptor template is not JSON: {e}"))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("descriptor template is not a JSON object"))?;
        let base = base_url.trim_end_matches('/').to_owned();
        obj.insert("baseUrl".into(), Value::String(base.clone()));
        obj.insert("key".into(), Value::String(app_key.to_owned()));
        if let Some(links) = obj.get_mut("links").and_then(Value::as_object_mut) {
            links.insert(
                "self".into(),
                Value::String(format!("{base}/atlassian-connect.json")),
            );
        }
        Ok(Descriptor { rendered: v })
    }

    /// The descriptor; with an access token, the `installed` lifecycle URL carries
    /// `access-token=T` so that a site installing from this URL redeems it.
    pub fn render(&self, access_token: Option<&str>) -> Value {
        let mut v = self.rendered.clone();
        if let Some(token) = access_token.filter(|t| !t.is_empty())
            && let Some(installed) = v.get_mut("lifecycle").and_then(|l| l.get_mut("installed"))
        {
            let url = installed.as_str().unwrap_or("/installed").to_owned();
            let sep = if url.contains('?') { '&' } else { '?' };
            let enc =
                percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
            *installed = Value::String(format!("{url}{sep}access-token={enc}"));
        }
        v
    }

    /// The path (relative to the base URL) of a lifecycle callback.
    pub fn lifecycle_path(&self, event: &str) -> Option<&str> {
        self.rendered.get("lifecycle")?.get(event)?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_template_is_a_licensed_jwt_app() {
        let d = Descriptor::new(BUILTIN_TEMPLATE, "https://app.example.com/acme/", "k").unwrap();
        let v = d.render(None);
        assert_eq!(v["baseUrl"], "https://app.example.com/acme");
        assert_eq!(v["key"], "k");
        assert_eq!(v["enableLicensing"], true);
        assert_eq!(v["authentication"]["type"], "jwt");
        assert_eq!(v["apiMigrations"]["signed-install"], true);
        assert_eq!(v["apiMigrations"]["context-qsh"], true);
        for e in ["installed", "uninstalled", "enabled", "disabled"] {
            assert_eq!(v["lifecycle"][e], format!("/{e}"));
        }
    }

    #[test]
    fn access_token_rides_on_the_installed_url_only() {
        let d = Descriptor::new(BUILTIN_TEMPLATE, "https://a.example", "k").unwrap();
        let v = d.render(Some("tok en"));
        assert_eq!(
            v["lifecycle"]["installed"],
            "/installed?access-token=tok%20en"
        );
        assert_eq!(v["lifecycle"]["uninstalled"], "/uninstalled");
        assert_eq!(d.render(None)["lifecycle"]["installed"], "/installed");
    }
}
