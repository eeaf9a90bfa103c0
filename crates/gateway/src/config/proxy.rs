//! The proxies to the application backend: `[proxy]` in the file (endpoints,
//! time and number bounds, forwarded headers), and the namespaces'
//! `proxy_subscribe` / `proxy_publish` / `proxy_sub_refresh` with their optional
//! own endpoints.

use std::time::Duration;

use http::header::HeaderName;
use http::Uri;
use serde::Deserialize;
use switchboard_core::namespace::{Namespace, NamespaceOptions};

use crate::backend::endpoint;

/// How long a proxy call may take by default.
const DEFAULT_TIMEOUT: f64 = 1.0;
/// Calls to the backend in flight at once per gateway, by default.
const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// `[proxy]` as the file gives it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// A client connecting without a token is authenticated by the backend.
    pub connect_endpoint: Option<String>,
    /// When the credentials the connect proxy gave expire, the backend says
    /// whether the connection goes on (and until when).
    pub refresh_endpoint: Option<String>,
    /// A client's `rpc` command is answered by the backend.
    pub rpc_endpoint: Option<String>,
    /// Namespaces with `proxy_subscribe` ask here unless they name their own.
    pub subscribe_endpoint: Option<String>,
    /// Namespaces with `proxy_publish` ask here unless they name their own.
    pub publish_endpoint: Option<String>,
    /// Namespaces with `proxy_sub_refresh` ask here unless they name their own.
    pub sub_refresh_endpoint: Option<String>,
    /// A client's `send` (asynchronous message) goes to the backend.
    pub send_endpoint: Option<String>,
    /// Seconds one call may take, connecting included.
    pub timeout: Option<f64>,
    /// Calls in flight at once on one gateway, every proxy together.
    pub max_in_flight: Option<usize>,
    /// Headers of the client's HTTP request (the WebSocket upgrade, or the
    /// stream's request) passed on to the backend, by name.
    pub http_headers: Vec<String>,
}

/// The proxies, resolved.
#[derive(Debug, Clone)]
pub struct Proxies {
    pub connect: Option<Uri>,
    pub refresh: Option<Uri>,
    pub rpc: Option<Uri>,
    pub subscribe: Option<Uri>,
    pub publish: Option<Uri>,
    pub sub_refresh: Option<Uri>,
    pub send: Option<Uri>,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub http_headers: Vec<HeaderName>,
}

impl Default for Proxies {
    fn default() -> Self {
        Proxies::resolve(ProxySection::default(), &NamespaceOptions::default(), &[])
            .expect("no proxy is a valid configuration")
    }
}

fn parse(url: Option<String>, what: &str) -> Result<Option<Uri>, String> {
    url.filter(|u| !u.is_empty())
        .map(|u| endpoint(&u).map_err(|e| format!("[proxy] {what}: {e}")))
        .transpose()
}

impl Proxies {
    /// Checks the section and that every namespace asking for a proxy has an
    /// endpoint for it.
    pub fn resolve(
        section: ProxySection,
        default: &NamespaceOptions,
        named: &[Namespace],
    ) -> Result<Proxies, String> {
        let timeout = section.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 60.0) {
            return Err(format!(
                "[proxy] timeout = {timeout}: give 0 < seconds <= 60"
            ));
        }
        let max_in_flight = section.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            return Err("[proxy] max_in_flight must be at least 1".into());
        }
        let http_headers = section
            .http_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str())
                    .map_err(|_| format!("[proxy] http_headers: {h:?} is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proxies = Proxies {
            connect: parse(section.connect_endpoint, "connect_endpoint")?,
            refresh: parse(section.refresh_endpoint, "refresh_endpoint")?,
            rpc: parse(section.rpc_endpoint, "rpc_endpoint")?,
            subscribe: parse(section.subscribe_endpoint, "subscribe_endpoint")?,
            publish: parse(section.publish_endpoint, "publish_endpoint")?,
            sub_refresh: parse(section.sub_refresh_endpoint, "sub_refresh_endpoint")?,
            send: parse(section.send_endpoint, "send_endpoint")?,
            timeout: Duration::from_secs_f64(timeout),
            max_in_flight,
            http_headers,
        };
        let namespaces = std::iter::once(("(default)", default))
            .chain(named.iter().map(|n| (n.name.as_str(), &n.options)));
        for (name, options) in namespaces {
            proxies
                .subscribe_endpoint(options)
                .map_err(|e| format!("namespace {name}: {e}"))?;
            proxies
                .publish_endpoint(options)
                .map_err(|e| format!("namespace {name}: {e}"))?;
            proxies
                .sub_refresh_endpoint(options)
                .map_err(|e| format!("namespace {name}: {e}"))?;
        }
        Ok(proxies)
    }

    /// Where a namespace's subscribe proxy is, if it has one.
    pub fn subscribe_endpoint(&self, options: &NamespaceOptions) -> Result<Option<Uri>, String> {
        namespace_endpoint(
            options.proxy_subscribe,
            &options.subscribe_proxy_endpoint,
            &self.subscribe,
            "proxy_subscribe",
        )
    }

    /// Where a namespace's publish proxy is, if it has one.
    pub fn publish_endpoint(&self, options: &NamespaceOptions) -> Result<Option<Uri>, String> {
        namespace_endpoint(
            options.proxy_publish,
            &options.publish_proxy_endpoint,
            &self.publish,
            "proxy_publish",
        )
    }

    /// Where a namespace's sub_refresh proxy is, if it has one.
    pub fn sub_refresh_endpoint(&self, options: &NamespaceOptions) -> Result<Option<Uri>, String> {
        namespace_endpoint(
            options.proxy_sub_refresh,
            &options.sub_refresh_proxy_endpoint,
            &self.sub_refresh,
            "proxy_sub_refresh",
        )
    }
}

fn namespace_endpoint(
    on: bool,
    own: &Option<String>,
    global: &Option<Uri>,
    what: &str,
) -> Result<Option<Uri>, String> {
    if !on {
        return Ok(None);
    }
    match (own.as_deref().filter(|u| !u.is_empty()), global) {
        (Some(url), _) => endpoint(url).map(Some),
        (None, Some(global)) => Ok(Some(global.clone())),
        (None, None) => Err(format!(
            "{what} needs an endpoint: its own, or the one in [proxy]"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, options: NamespaceOptions) -> Namespace {
        Namespace {
            name: name.into(),
            options,
        }
    }

    #[test]
    fn a_namespace_uses_its_own_endpoint_or_the_global_one() {
        let section = ProxySection {
            subscribe_endpoint: Some("http://app/subscribe".into()),
            ..Default::default()
        };
        let own = NamespaceOptions {
            proxy_subscribe: true,
            subscribe_proxy_endpoint: Some("http://other/subscribe".into()),
            ..Default::default()
        };
        let global = NamespaceOptions {
            proxy_subscribe: true,
            ..Default::default()
        };
        let named = [
            namespace("own", own.clone()),
            namespace("global", global.clone()),
        ];
        let proxies = Proxies::resolve(section, &NamespaceOptions::default(), &named).unwrap();
        let at = |o: &NamespaceOptions| {
            proxies
                .subscribe_endpoint(o)
                .unwrap()
                .map(|u| u.to_string())
        };
        assert_eq!(at(&own).as_deref(), Some("http://other/subscribe"));
        assert_eq!(at(&global).as_deref(), Some("http://app/subscribe"));
        assert_eq!(at(&NamespaceOptions::default()), None);
    }

    #[test]
    fn a_proxy_without_an_endpoint_or_with_a_bad_one_is_refused() {
        let wants = NamespaceOptions {
            proxy_publish: true,
            ..Default::default()
        };
        let e = Proxies::resolve(
            ProxySection::default(),
            &NamespaceOptions::default(),
            &[namespace("chat", wants)],
        )
        .unwrap_err();
        assert!(e.contains("chat") && e.contains("proxy_publish"), "{e}");
        let refreshes = NamespaceOptions {
            proxy_sub_refresh: true,
            ..Default::default()
        };
        let e = Proxies::resolve(
            ProxySection::default(),
            &NamespaceOptions::default(),
            &[namespace("live", refreshes)],
        )
        .unwrap_err();
        assert!(e.contains("live") && e.contains("proxy_sub_refresh"), "{e}");
        for section in [
            ProxySection {
                connect_endpoint: Some("https://app/connect".into()),
                ..Default::default()
            },
            ProxySection {
                timeout: Some(0.0),
                ..Default::default()
            },
            ProxySection {
                max_in_flight: Some(0),
                ..Default::default()
            },
            ProxySection {
                http_headers: vec!["bad header".into()],
                ..Default::default()
            },
        ] {
            assert!(
                Proxies::resolve(section.clone(), &NamespaceOptions::default(), &[]).is_err(),
                "{section:?}"
            );
        }
    }
}
