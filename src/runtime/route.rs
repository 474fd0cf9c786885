//! Routing: from the `model` a client asked for to the chain of targets that may serve it.
//!
//! Pure lookups over the immutable [`Runtime`] snapshot: no locks, no allocation for an
//! alias (targets are compiled once, with their pre-encoded model and header values).
//! A model that is not an alias but reads `provider/model` with a known provider goes to
//! that provider alone.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

use crate::config::{ProviderSettings, Strategy};
use crate::payload::encode_model;
use crate::policy::health::Health;
use crate::policy::walk::Guarded;
use crate::runtime::Runtime;
use crate::upstream::Provider;

/// One provider/model pair a request may be sent to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The provider.
    pub provider: Arc<Provider>,
    /// Model name sent upstream.
    pub model: Arc<str>,
    /// `model` encoded as a JSON string, ready to splice into the body.
    pub model_json: Bytes,
    /// `provider/model`, for `x-gateway-target` and logs.
    pub label: HeaderValue,
    /// Relative weight.
    pub weight: u32,
    /// USD per million prompt tokens.
    pub input_cost: Option<f64>,
    /// USD per million completion tokens.
    pub output_cost: Option<f64>,
}

impl Target {
    /// A target with default weight and no costs.
    pub fn new(provider: Arc<Provider>, model: &str) -> Target {
        let label = HeaderValue::from_str(&format!("{}/{}", provider.name, model))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Target {
            model_json: encode_model(model),
            model: model.into(),
            provider,
            label,
            weight: 1,
            input_cost: None,
            output_cost: None,
        }
    }

    /// `provider/model` as text.
    pub fn label_str(&self) -> &str {
        self.label.to_str().unwrap_or("")
    }
}

impl Guarded for Target {
    fn health(&self) -> &Health {
        &self.provider.health
    }

    fn settings(&self) -> &ProviderSettings {
        &self.provider.settings
    }
}

/// A model alias: a strategy over a chain of targets.
#[derive(Debug, Clone)]
pub struct Route {
    /// The alias (also the `model` metric label).
    pub alias: Arc<str>,
    /// How targets are ordered.
    pub strategy: Strategy,
    /// The chain, in configured order.
    pub targets: Box<[Target]>,
}

/// The targets chosen for one request.
#[derive(Debug)]
pub enum Plan<'a> {
    /// An alias from `[models]`.
    Alias(&'a Route),
    /// `provider/model` sent straight to a known provider.
    Direct(Target),
}

impl Plan<'_> {
    /// The targets, in the order to try them.
    pub fn targets(&self) -> &[Target] {
        match self {
            Plan::Alias(r) => &r.targets,
            Plan::Direct(t) => std::slice::from_ref(t),
        }
    }
}

/// Resolves a requested model: an alias first, then `provider/model`.
pub fn resolve<'a>(rt: &'a Runtime, model: &str) -> Option<Plan<'a>> {
    if let Some(route) = rt.models.get(model) {
        return Some(Plan::Alias(route));
    }
    let (provider, upstream_model) = model.split_once('/')?;
    if upstream_model.is_empty() {
        return None;
    }
    let p = rt.providers.get(provider)?;
    Some(Plan::Direct(Target::new(p.clone(), upstream_model)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn rt() -> Runtime {
        let c = Config::parse_with(
            r#"
            [providers.a]
            kind = "mock"
            [providers.local]
            kind = "mock"
            [models.coder]
            targets = ["a/x", { provider = "local", model = "meta/llama", weight = 3 }]
            [models."a/shadowed"]
            targets = ["local/other"]
            "#,
            &Overrides::default(),
            &|_| None,
        )
        .unwrap();
        Runtime::build(c, 1).unwrap()
    }

    #[test]
    fn alias_resolves_to_its_chain() {
        let rt = rt();
        let plan = resolve(&rt, "coder").unwrap();
        let t = plan.targets();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].label_str(), "a/x");
        assert_eq!(&*t[1].model, "meta/llama");
        assert_eq!(t[1].weight, 3);
        assert_eq!(&t[1].model_json[..], br#""meta/llama""#);
    }

    #[test]
    fn provider_slash_model_is_direct() {
        let rt = rt();
        let plan = resolve(&rt, "local/meta-llama/Llama-3-8B").unwrap();
        assert!(matches!(plan, Plan::Direct(_)));
        assert_eq!(&*plan.targets()[0].model, "meta-llama/Llama-3-8B");
        assert_eq!(&*plan.targets()[0].provider.name, "local");
    }

    #[test]
    fn alias_wins_over_direct() {
        let rt = rt();
        assert_eq!(
            resolve(&rt, "a/shadowed").unwrap().targets()[0].label_str(),
            "local/other"
        );
    }

    #[test]
    fn unknown_models() {
        let rt = rt();
        for m in ["gpt-4o", "nope/x", "a/", "", "/x"] {
            assert!(resolve(&rt, m).is_none(), "{m}");
        }
    }
}
