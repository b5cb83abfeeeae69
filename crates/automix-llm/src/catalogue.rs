//! The model catalogue, read from LLMRouter's llm_data JSON:
//! `{name: {size: "7B", input_price, output_price, model, service?, api_endpoint?, api_key_env?}}`.

use std::fmt;

use serde::Deserialize;
use thiserror::Error;

use crate::types::Usage;

/// An API key. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    /// The secret, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Checks an `api_endpoint`: an absolute http(s) URL with a host, so a typo fails at start
/// rather than at the first request.
fn endpoint_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{url:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url.to_owned())
}

/// Shortest piece of a key that [`ApiKey::redact`] treats as a leak.
const MIN_KEY_FRAGMENT: usize = 6;

impl ApiKey {
    /// `text` with every piece of this key of at least 6 characters (the whole key, a
    /// prefix, a suffix or any run of it) replaced by `<redacted>`: upstreams echo keys in
    /// part ("Incorrect API key provided: sk-abc…xyz"), and a cut excerpt can split one.
    /// Redact first, cut after.
    pub fn redact(&self, text: &str) -> String {
        let key = self.0.as_bytes();
        if key.is_empty() {
            return text.to_owned();
        }
        let min = MIN_KEY_FRAGMENT.min(key.len());
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let mut plain_from = 0;
        while i < bytes.len() {
            let run = longest_key_run(&bytes[i..], key);
            // Only cut at char boundaries; key bytes outside ASCII are matched whole.
            if run >= min && text.is_char_boundary(i) && text.is_char_boundary(i + run) {
                out.push_str(&text[plain_from..i]);
                out.push_str("<redacted>");
                i += run;
                plain_from = i;
            } else {
                i += 1;
            }
        }
        out.push_str(&text[plain_from..]);
        out
    }
}

/// The longest prefix of `text` that occurs somewhere in `key`.
fn longest_key_run(text: &[u8], key: &[u8]) -> usize {
    let mut best = 0;
    for start in 0..key.len() {
        let run = text
            .iter()
            .zip(&key[start..])
            .take_while(|(a, b)| a == b)
            .count();
        best = best.max(run);
    }
    best
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// One model of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// The llm_data key.
    pub name: String,
    /// Parameter count parsed from `size` (`"7B"` → 7e9).
    pub parameters: f64,
    /// Money per million prompt tokens.
    pub input_price: f64,
    /// Money per million completion tokens.
    pub output_price: f64,
    /// Upstream model id sent in requests.
    pub model: String,
    /// Hosting service, informational.
    pub service: Option<String>,
    /// Base URL of an OpenAI-compatible endpoint (`…/v1`).
    pub api_endpoint: Option<String>,
    /// Name of the environment variable holding the key.
    pub api_key_env: Option<String>,
}

impl ModelEntry {
    /// The one order of models everywhere (routing, training pairs, collection): by price
    /// (input + output per token), then by parameter count. The small model is the first.
    pub fn cost_order(&self, other: &ModelEntry) -> std::cmp::Ordering {
        (self.input_price + self.output_price)
            .total_cmp(&(other.input_price + other.output_price))
            .then(self.parameters.total_cmp(&other.parameters))
    }
}

impl ModelEntry {
    /// Money cost of `usage` at this model's prices.
    pub fn cost(&self, usage: Usage) -> f64 {
        automix_core::TokenPrice {
            input_per_million: self.input_price,
            output_per_million: self.output_price,
        }
        .cost(usage)
    }

    /// Reads the key from the variable named by `api_key_env`; `Ok(None)` when none is named.
    pub fn api_key(&self) -> Result<Option<ApiKey>, crate::LlmError> {
        match &self.api_key_env {
            None => Ok(None),
            Some(env) => std::env::var(env)
                .map(|k| Some(ApiKey::new(k)))
                .map_err(|_| crate::LlmError::MissingApiKey {
                    model: self.name.clone(),
                    env: env.clone(),
                }),
        }
    }
}

/// A bad llm_data file.
#[derive(Debug, Error)]
pub enum CatalogueError {
    /// Not JSON, or not an object of objects.
    #[error("{source_name}: {message}")]
    Json {
        /// File name or label.
        source_name: String,
        /// The parse error (with line and column).
        message: String,
    },
    /// A field is missing or has the wrong type or value.
    #[error("{source_name}: model `{model}`, field `{field}`: {message}")]
    Field {
        /// File name or label.
        source_name: String,
        /// llm_data key.
        model: String,
        /// Field name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The file lists no models.
    #[error("{0}: no models")]
    Empty(String),
    /// A model name asked for is not in the file.
    #[error("model `{name}` is not in the catalogue (known: {known})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Names present.
        known: String,
    },
}

/// Models in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    models: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    size: Option<serde_json::Value>,
    #[serde(default)]
    feature: Option<String>,
    input_price: Option<serde_json::Value>,
    output_price: Option<serde_json::Value>,
    model: Option<String>,
    service: Option<String>,
    api_endpoint: Option<String>,
    api_key_env: Option<String>,
}

impl Catalogue {
    /// Parses llm_data JSON; `source_name` labels errors (usually the file path).
    pub fn from_json(text: &str, source_name: &str) -> Result<Self, CatalogueError> {
        let json_err = |e: serde_json::Error| CatalogueError::Json {
            source_name: source_name.into(),
            message: e.to_string(),
        };
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(json_err)?;
        let mut models = Vec::with_capacity(map.len());
        for (name, value) in map {
            let field_err = |field: &str, message: String| CatalogueError::Field {
                source_name: source_name.into(),
                model: name.clone(),
                field: field.into(),
                message,
            };
            let raw: RawEntry =
                serde_json::from_value(value).map_err(|e| field_err("(entry)", e.to_string()))?;
            let _ = raw.feature;
            let size = raw
                .size
                .ok_or_else(|| field_err("size", "missing".into()))?;
            let size_text = match &size {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    return Err(field_err(
                        "size",
                        format!("expected a string like \"7B\", got {other}"),
                    ));
                }
            };
            let parameters = parse_size(&size_text).map_err(|m| field_err("size", m))?;
            let price =
                |field: &str, v: Option<serde_json::Value>| -> Result<f64, CatalogueError> {
                    let v = v.ok_or_else(|| field_err(field, "missing".into()))?;
                    let p = v
                        .as_f64()
                        .ok_or_else(|| field_err(field, format!("expected a number, got {v}")))?;
                    if p.is_finite() && p >= 0.0 {
                        Ok(p)
                    } else {
                        Err(field_err(field, format!("{p} is not a price")))
                    }
                };
            let input_price = price("input_price", raw.input_price)?;
            let output_price = price("output_price", raw.output_price)?;
            let model = raw
                .model
                .ok_or_else(|| field_err("model", "missing".into()))?;
            let api_endpoint = raw
                .api_endpoint
                .map(|url| endpoint_url(&url).map_err(|m| field_err("api_endpoint", m)))
                .transpose()?;
            models.push(ModelEntry {
                name,
                parameters,
                input_price,
                output_price,
                model,
                service: raw.service,
                api_endpoint,
                api_key_env: raw.api_key_env,
            });
        }
        if models.is_empty() {
            return Err(CatalogueError::Empty(source_name.into()));
        }
        Ok(Self { models })
    }

    /// Models in file order.
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    /// The model named `name`.
    pub fn get(&self, name: &str) -> Result<&ModelEntry, CatalogueError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| CatalogueError::UnknownModel {
                name: name.into(),
                known: self
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The cheapest model in [`ModelEntry::cost_order`] (ties: first in file order).
    pub fn cheapest(&self) -> &ModelEntry {
        let mut best = &self.models[0];
        for m in &self.models[1..] {
            if m.cost_order(best).is_lt() {
                best = m;
            }
        }
        best
    }

    /// The most expensive model in [`ModelEntry::cost_order`] (ties: first in file order).
    pub fn costliest(&self) -> &ModelEntry {
        let mut best = &self.models[0];
        for m in &self.models[1..] {
            if m.cost_order(best).is_gt() {
                best = m;
            }
        }
        best
    }
}

/// Parses `"7B"`, `"1.5b"`, `"135M"`, `"2T"`, `"900K"` or a bare number into a parameter count.
pub fn parse_size(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('B') => (&t[..t.len() - 1], 1e9),
        Some('T') => (&t[..t.len() - 1], 1e12),
        Some(_) => (t, 1.0),
        None => return Err("empty size".into()),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 7B, 1.5B, 135M"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v * mult)
    } else {
        Err(format!("`{text}` is not a positive size"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("7B"), Ok(7e9));
        assert_eq!(parse_size("1.5b"), Ok(1.5e9));
        assert_eq!(parse_size("135M"), Ok(135e6));
        assert_eq!(parse_size("2T"), Ok(2e12));
        assert!(parse_size("big").is_err());
        assert!(parse_size("-1B").is_err());
    }

    #[test]
    fn redaction_removes_every_piece_of_a_key() {
        let key = ApiKey::new("sk-live-0123456789abcdefXYZ");
        let text = "bad key sk-live-0123456789abcdefXYZ; echo sk-live-0123…defXYZ and 89abcd";
        let out = key.redact(text);
        assert_eq!(
            out,
            "bad key <redacted>; echo <redacted>…<redacted> and <redacted>"
        );
        assert_eq!(key.redact("short sk-l is fine"), "short sk-l is fine");
        assert_eq!(ApiKey::new("").redact("x"), "x");
    }

    #[test]
    fn keys_are_redacted() {
        let k = ApiKey::new("sk-secret-123");
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn cheapest_and_costliest_with_ties_in_file_order() {
        let c = Catalogue::from_json(
            r#"{"a": {"size": "7B", "input_price": 0.2, "output_price": 0.2, "model": "m/a"},
                "b": {"size": "1B", "input_price": 0.1, "output_price": 0.1, "model": "m/b"},
                "c": {"size": "1B", "input_price": 0.1, "output_price": 0.1, "model": "m/c"},
                "d": {"size": "7B", "input_price": 0.1, "output_price": 0.1, "model": "m/d"}}"#,
            "t.json",
        )
        .unwrap();
        assert_eq!(c.cheapest().name, "b");
        assert_eq!(c.costliest().name, "a");
        assert!(
            (c.get("a").unwrap().cost(Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 0
            }) - 0.2)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn each_model_gets_its_own_endpoint_and_key() {
        let c = Catalogue::from_json(
            r#"{"remote": {"size": "70B", "input_price": 1, "output_price": 2, "model": "m/r",
                           "api_endpoint": "https://api.example.invalid/v1", "api_key_env": "PATH"},
                "nokey": {"size": "7B", "input_price": 1, "output_price": 2, "model": "m/n",
                          "api_key_env": "AUTOMIX_TEST_SURELY_UNSET_VAR"},
                "local": {"size": "1B", "input_price": 0, "output_price": 0, "model": "m/l"}}"#,
            "t.json",
        )
        .unwrap();
        let remote = crate::EndpointConfig::for_model(c.get("remote").unwrap(), None).unwrap();
        assert_eq!(remote.base_url, "https://api.example.invalid/v1");
        assert!(remote.api_key.is_some());
        assert!(!format!("{remote:?}").contains(&std::env::var("PATH").unwrap()));
        let local = crate::EndpointConfig::for_model(
            c.get("local").unwrap(),
            Some("http://127.0.0.1:1/v1"),
        )
        .unwrap();
        assert_eq!(
            (local.base_url.as_str(), local.api_key.is_none()),
            ("http://127.0.0.1:1/v1", true)
        );
        assert!(matches!(
            crate::EndpointConfig::for_model(c.get("local").unwrap(), None),
            Err(crate::LlmError::MissingEndpoint { .. })
        ));
        let e = crate::EndpointConfig::for_model(c.get("nokey").unwrap(), Some("http://x/v1"))
            .unwrap_err();
        assert!(
            e.to_string().contains("AUTOMIX_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
    }

    #[test]
    fn bad_fields_name_the_model_and_field() {
        let e = Catalogue::from_json(
            r#"{"x": {"size": "huge", "input_price": 1, "output_price": 1, "model": "m"}}"#,
            "llm.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("llm.json") && e.contains("`x`") && e.contains("`size`"),
            "{e}"
        );
        let e = Catalogue::from_json(
            r#"{"x": {"size": "1B", "input_price": "cheap", "output_price": 1, "model": "m"}}"#,
            "llm.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`input_price`"), "{e}");
        for bad in ["not a url", "ftp://host/v1", "file:///tmp/x"] {
            let text = format!(
                r#"{{"x": {{"size": "1B", "input_price": 1, "output_price": 1, "model": "m", "api_endpoint": "{bad}"}}}}"#
            );
            let e = Catalogue::from_json(&text, "llm.json")
                .unwrap_err()
                .to_string();
            assert!(e.contains("`api_endpoint`") && e.contains(bad), "{e}");
        }
    }
}
