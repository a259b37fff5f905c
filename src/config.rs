//! Every setting, its default and its validation. Read once at start-up; a
//! malformed value stops the process with a message that names the variable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::domain::duration;

/// The JWT key used only in sandbox mode, so `billing token` works out of the box.
pub const DEV_JWT_SECRET: &str = "billing-sandbox-dev-key-not-for-production";
pub const SANDBOX_SHOP_ID: &str = "sandbox-shop";
pub const SANDBOX_SECRET_KEY: &str = "sandbox_secret";

/// YooKassa's published notification sources (providers.md).
pub const YOOKASSA_IPS: &[&str] = &[
    "185.71.76.0/27",
    "185.71.77.0/27",
    "77.75.153.0/25",
    "77.75.156.11/32",
    "77.75.156.35/32",
    "77.75.154.128/25",
    "2a02:5180::/32",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No YooKassa credentials: the built-in provider, no real money.
    Sandbox,
    /// A `test_` secret key: the provider's test shop.
    Test,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sandbox => "sandbox",
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }

    /// Whether money moves. Recorded on every payment and event.
    pub fn livemode(self) -> bool {
        self == Mode::Live
    }
}

impl Config {
    /// One provider's mode, from its own credentials: YooKassa's is the service's
    /// (`sandbox` without credentials), CloudPayments' its own.
    pub fn provider_mode(&self, system: crate::domain::PaySystem) -> Mode {
        match system {
            crate::domain::PaySystem::YooKassa => self.mode,
            crate::domain::PaySystem::CloudPayments => {
                self.cloudpayments.as_ref().map_or(Mode::Test, |c| c.mode)
            }
        }
    }

    /// Whether payments and refunds at `system` carry a 54-FZ receipt.
    pub fn receipts_on(&self, system: crate::domain::PaySystem) -> bool {
        self.receipts.contains(&system)
    }

    /// Whether a payment at `system` moves money: its `livemode`.
    pub fn livemode(&self, system: crate::domain::PaySystem) -> bool {
        self.provider_mode(system).livemode()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct YooKassaConfig {
    pub shop_id: String,
    pub secret_key: Secret,
    /// None in sandbox mode until the listener is bound: then it is our own URL.
    pub api_url: Option<String>,
    pub return_url: Option<String>,
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct CloudPaymentsConfig {
    pub public_id: String,
    pub api_secret: Secret,
    pub api_url: String,
    /// `CLOUDPAYMENTS_MODE`, else `test` for a `test_api_` public id, else `live`:
    /// the `TestMode` its notifications must carry and the `livemode` of its payments.
    pub mode: Mode,
}

/// `DATABASE_POOL_SIZE` when unset (see BENCHMARKS.md, "Pool size").
pub const DEFAULT_DATABASE_POOL_SIZE: usize = 8;
/// `JOB_CONCURRENCY` when unset: claimed items a job works on at once.
pub const DEFAULT_JOB_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// Most PostgreSQL connections this process opens (`DATABASE_POOL_SIZE`).
    pub database_pool_size: usize,
    pub amqp_url: String,
    pub listen_addr: SocketAddr,
    pub jwt_secret: Secret,
    pub mode: Mode,
    pub yookassa: YooKassaConfig,
    pub cloudpayments: Option<CloudPaymentsConfig>,
    pub trusted_proxies: Vec<IpNet>,
    /// Raw key bytes (base64-decoded from `whsec_…`).
    pub ops_webhook_secret: Option<Vec<u8>>,
    pub reconcile_after: Duration,
    pub renew_before: Duration,
    pub dunning_schedule: Vec<Duration>,
    /// How long after the period end access lasts while renewals are refused for a
    /// reason of ours (credentials, shop settings), retried meanwhile.
    pub refusal_grace: Duration,
    /// `PROVIDER_TIMEOUT`: the wait for one provider answer (100 ms to 10 s); an
    /// answer later than that is an unknown outcome, asked again with the same key.
    pub provider_timeout: Duration,
    /// `TARIFF_CACHE_TTL`: the longest a process serves its copy of the tariff list
    /// without re-reading it, should a change notification be missed.
    pub tariff_cache_ttl: Duration,
    pub outbox_retention: Duration,
    pub webhook_body_retention: Duration,
    pub jobs: JobsConfig,
    /// Explicit RETURN_URL_ALLOWED_ORIGINS; empty means "the origin of the return URL".
    pub return_url_allowed_origins: Vec<String>,
    /// `RECEIPTS`: the providers that get a 54-FZ receipt with every payment,
    /// renewal and refund (empty: off).
    pub receipts: Vec<crate::domain::PaySystem>,
    pub log_format: LogFormat,
    pub http: HttpLimits,
}

/// What one HTTP client may hold of the server: without these a client that sends
/// half a request (slowloris) or nothing at all keeps a connection and a descriptor
/// forever, and a few hundred of them starve `/healthz`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// `HTTP_HEADER_READ_TIMEOUT`: a new connection's first request head must be
    /// complete this long after it opens; a later one, this long after its first byte.
    pub header_read_timeout: Duration,
    /// `HTTP_BODY_READ_TIMEOUT`: the whole request body, from the end of the head.
    pub body_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`: a kept-alive connection waiting for its next request.
    /// Longer than the idle timeout of the proxy in front, so the proxy closes first.
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open client connections; more wait in the listen
    /// backlog. Lowered at start-up to what the descriptor limit leaves room for.
    pub max_connections: usize,
}

/// How often each background job runs when it found less than a full batch
/// (`JOB_<NAME>_INTERVAL`), and how long a job that calls a provider leaves a
/// claimed row alone (`JOB_<NAME>_LEASE`; longer than a provider call with its
/// retries, so a row is never worked on twice at once).
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub inbox_retry_interval: Duration,
    pub reconciler_interval: Duration,
    pub reconciler_lease: Duration,
    pub renewer_interval: Duration,
    pub renewer_lease: Duration,
    pub expirer_interval: Duration,
    pub refund_follow_up_interval: Duration,
    pub refund_follow_up_lease: Duration,
    pub refund_sweep_interval: Duration,
    pub refund_sweep_window: Duration,
    pub housekeeping_interval: Duration,
    pub outbox_retention_interval: Duration,
    /// Claimed renewals (renewer) and payments (reconciler) worked on at once per
    /// process (`JOB_CONCURRENCY`): each is a few queries and one provider call.
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let dur = |name: &'static str, default: &str| -> Result<Duration, ConfigError> {
            let text = var(name).unwrap_or_else(|| default.to_owned());
            duration::parse(&text).map_err(|e| err(name, e))
        };
        let cidrs = |name: &'static str| -> Result<Vec<IpNet>, ConfigError> {
            var(name)
                .map(|v| parse_cidrs(&v).map_err(|e| err(name, e)))
                .unwrap_or(Ok(Vec::new()))
        };
        let url = |name: &'static str| -> Result<Option<String>, ConfigError> {
            match var(name) {
                None => Ok(None),
                Some(v) => {
                    let parsed =
                        url::Url::parse(&v).map_err(|e| err(name, format!("not a URL: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(err(name, "must be an http(s) URL"));
                    }
                    Ok(Some(v.trim_end_matches('/').to_owned()))
                }
            }
        };

        let listen_addr = var("LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8000".into())
            .parse()
            .map_err(|e| err("LISTEN_ADDR", format!("not host:port: {e}")))?;

        let shop_id = var("YOOKASSA_SHOP_ID");
        let secret_key = var("YOOKASSA_SECRET_KEY");
        let mode = match (&shop_id, &secret_key) {
            (None, None) => Mode::Sandbox,
            (Some(_), Some(key)) if key.starts_with("test_") => Mode::Test,
            (Some(_), Some(_)) => Mode::Live,
            (Some(_), None) => {
                return Err(err("YOOKASSA_SECRET_KEY", "required with YOOKASSA_SHOP_ID"))
            }
            (None, Some(_)) => {
                return Err(err("YOOKASSA_SHOP_ID", "required with YOOKASSA_SECRET_KEY"))
            }
        };
        let cloudpayments = match (
            var("CLOUDPAYMENTS_PUBLIC_ID"),
            var("CLOUDPAYMENTS_API_SECRET"),
        ) {
            (None, None) => None,
            (Some(public_id), Some(secret)) => Some(CloudPaymentsConfig {
                mode: match var("CLOUDPAYMENTS_MODE").as_deref() {
                    Some("test") => Mode::Test,
                    Some("live") => Mode::Live,
                    Some(other) => {
                        return Err(err(
                            "CLOUDPAYMENTS_MODE",
                            format!("unknown mode {other:?} (`test` or `live`)"),
                        ))
                    }
                    // CloudPayments' test terminals have `test_api_…` public ids.
                    None if public_id.starts_with("test_api_") => Mode::Test,
                    None => Mode::Live,
                },
                public_id,
                api_secret: Secret::new(secret),
                api_url: url("CLOUDPAYMENTS_API_URL")?
                    .unwrap_or_else(|| "https://api.cloudpayments.ru".into()),
            }),
            (Some(_), None) => {
                return Err(err(
                    "CLOUDPAYMENTS_API_SECRET",
                    "required with CLOUDPAYMENTS_PUBLIC_ID",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "CLOUDPAYMENTS_PUBLIC_ID",
                    "required with CLOUDPAYMENTS_API_SECRET",
                ))
            }
        };

        match var("BILLING_MODE").as_deref() {
            None => {}
            Some("live") if mode != Mode::Live => {
                return Err(err(
                    "BILLING_MODE",
                    "live mode needs real (not test_) YooKassa credentials",
                ))
            }
            Some("live") if cloudpayments.as_ref().is_some_and(|c| c.mode != Mode::Live) => {
                return Err(err(
                    "BILLING_MODE",
                    "live mode needs every configured provider live: CloudPayments is in test mode \
                     (CLOUDPAYMENTS_MODE, or a test_api_ public id)",
                ))
            }
            Some("live") => {}
            Some(other) => {
                return Err(err(
                    "BILLING_MODE",
                    format!("unknown mode {other:?} (only `live`)"),
                ))
            }
        }

        let real_provider = mode != Mode::Sandbox || cloudpayments.is_some();
        let jwt_secret = match var("JWT_SECRET_KEY") {
            Some(key) => Secret::new(key),
            None if !real_provider => Secret::new(DEV_JWT_SECRET),
            None => {
                return Err(err(
                    "JWT_SECRET_KEY",
                    "required when a real provider is configured",
                ))
            }
        };
        if real_provider && jwt_secret.expose() == DEV_JWT_SECRET {
            return Err(err(
                "JWT_SECRET_KEY",
                "the sandbox dev key cannot be used with a real provider",
            ));
        }

        let mut allowed_ips = match var("YOOKASSA_WEBHOOK_ALLOWED_IPS") {
            Some(v) => parse_cidrs(&v).map_err(|e| err("YOOKASSA_WEBHOOK_ALLOWED_IPS", e))?,
            None => parse_cidrs(&YOOKASSA_IPS.join(",")).expect("built-in ranges parse"),
        };
        if mode == Mode::Sandbox {
            // The built-in provider notifies us from this very machine.
            allowed_ips.extend(parse_cidrs("127.0.0.0/8,::1/128").expect("loopback parses"));
        }

        let ops_webhook_secret = match var("OPS_WEBHOOK_SECRET") {
            None => None,
            Some(v) => Some(decode_whsec(&v).map_err(|e| err("OPS_WEBHOOK_SECRET", e))?),
        };

        // Idempotency-key leases are derived from the default (10 s): never longer.
        let provider_timeout = dur("PROVIDER_TIMEOUT", "10s")?;
        if provider_timeout < Duration::from_millis(100)
            || provider_timeout > crate::providers::RetryPolicy::DEFAULT.timeout
        {
            return Err(err("PROVIDER_TIMEOUT", "must be from 100ms to 10s"));
        }

        let dunning_schedule =
            duration::parse_list(&var("DUNNING_SCHEDULE").unwrap_or_else(|| "1d,3d,5d".into()))
                .map_err(|e| err("DUNNING_SCHEDULE", e))?;

        let return_url = url("YOOKASSA_RETURN_URL")?;
        let return_url_allowed_origins = match var("RETURN_URL_ALLOWED_ORIGINS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|o| {
                    url::Url::parse(o.trim())
                        .map(|u| u.origin().ascii_serialization())
                        .map_err(|e| err("RETURN_URL_ALLOWED_ORIGINS", format!("{o:?}: {e}")))
                })
                .collect::<Result<_, _>>()?,
        };

        // A whole number in 1..=max, or the default when unset.
        let whole =
            |name: &'static str, default: usize, max: usize| -> Result<usize, ConfigError> {
                match var(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| err(name, format!("{v:?}: a whole number from 1 to {max}"))),
                }
            };
        let database_pool_size = whole("DATABASE_POOL_SIZE", DEFAULT_DATABASE_POOL_SIZE, 1000)?;
        let job_concurrency = whole("JOB_CONCURRENCY", DEFAULT_JOB_CONCURRENCY, 1000)?;

        let http_timeout = |name: &'static str, default: &str| -> Result<Duration, ConfigError> {
            match dur(name, default)? {
                d if d.is_zero() => Err(err(name, "must be longer than zero")),
                d => Ok(d),
            }
        };
        let http = HttpLimits {
            header_read_timeout: http_timeout("HTTP_HEADER_READ_TIMEOUT", "10s")?,
            body_read_timeout: http_timeout("HTTP_BODY_READ_TIMEOUT", "30s")?,
            idle_timeout: http_timeout("HTTP_IDLE_TIMEOUT", "75s")?,
            max_connections: whole("HTTP_MAX_CONNECTIONS", 1024, 1_000_000)?,
        };

        let receipts = match var("RECEIPTS").as_deref() {
            None | Some("off") => vec![],
            Some(list) => {
                let mut systems = vec![];
                for name in list.split(',').map(str::trim) {
                    let system: crate::domain::PaySystem = name.parse().map_err(|_| {
                        err(
                            "RECEIPTS",
                            format!(
                                "unknown provider {name:?} (off, or yookassa and/or cloudpayments)"
                            ),
                        )
                    })?;
                    if !systems.contains(&system) {
                        systems.push(system);
                    }
                }
                systems
            }
        };

        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(err("LOG_FORMAT", format!("{other:?}: text or json"))),
        };

        Ok(Config {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/billing".into()),
            database_pool_size,
            amqp_url: var("AMQP_URL")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            listen_addr,
            jwt_secret,
            mode,
            yookassa: YooKassaConfig {
                shop_id: shop_id.unwrap_or_else(|| SANDBOX_SHOP_ID.into()),
                secret_key: Secret::new(secret_key.unwrap_or_else(|| SANDBOX_SECRET_KEY.into())),
                api_url: match url("YOOKASSA_API_URL")? {
                    Some(u) => Some(u),
                    None if mode == Mode::Sandbox => None,
                    None => Some("https://api.yookassa.ru/v3".into()),
                },
                return_url,
                allowed_ips,
            },
            cloudpayments,
            trusted_proxies: cidrs("TRUSTED_PROXIES")?,
            ops_webhook_secret,
            reconcile_after: dur("RECONCILE_AFTER", "2m")?,
            renew_before: dur("RENEW_BEFORE", "1d")?,
            dunning_schedule,
            refusal_grace: dur("REFUSAL_GRACE", "3d")?,
            provider_timeout,
            tariff_cache_ttl: dur("TARIFF_CACHE_TTL", "5s")?,
            outbox_retention: dur("OUTBOX_RETENTION", "7d")?,
            webhook_body_retention: dur("WEBHOOK_BODY_RETENTION", "30d")?,
            jobs: JobsConfig {
                inbox_retry_interval: dur("JOB_INBOX_RETRY_INTERVAL", "1s")?,
                reconciler_interval: dur("JOB_RECONCILER_INTERVAL", "5s")?,
                reconciler_lease: dur("JOB_RECONCILER_LEASE", "5m")?,
                renewer_interval: dur("JOB_RENEWER_INTERVAL", "10s")?,
                renewer_lease: dur("JOB_RENEWER_LEASE", "10m")?,
                expirer_interval: dur("JOB_EXPIRER_INTERVAL", "30s")?,
                refund_follow_up_interval: dur("JOB_REFUND_FOLLOW_UP_INTERVAL", "30s")?,
                refund_follow_up_lease: dur("JOB_REFUND_FOLLOW_UP_LEASE", "5m")?,
                refund_sweep_interval: dur("JOB_REFUND_SWEEP_INTERVAL", "1h")?,
                refund_sweep_window: dur("REFUND_SWEEP_WINDOW", "3d")?,
                housekeeping_interval: dur("JOB_HOUSEKEEPING_INTERVAL", "10m")?,
                outbox_retention_interval: dur("JOB_OUTBOX_RETENTION_INTERVAL", "10m")?,
                concurrency: job_concurrency,
            },
            return_url_allowed_origins,
            log_format,
            receipts,
            http,
        })
    }

    /// Fills what depends on the bound address (sandbox URLs) once the listener exists.
    pub fn resolve_local_urls(&mut self, bound: SocketAddr) {
        let mut bound = bound;
        if bound.ip().is_unspecified() {
            bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let base = format!("http://{bound}");
        if self.yookassa.api_url.is_none() {
            self.yookassa.api_url = Some(format!("{base}/sandbox/yookassa/v3"));
        }
        if self.yookassa.return_url.is_none() {
            self.yookassa.return_url = Some(format!("{base}/sandbox/return"));
        }
    }

    /// Origins a client-supplied `return_url` may point at (no open redirect).
    pub fn allowed_return_origins(&self) -> Vec<String> {
        if !self.return_url_allowed_origins.is_empty() {
            return self.return_url_allowed_origins.clone();
        }
        self.yookassa
            .return_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| vec![u.origin().ascii_serialization()])
            .unwrap_or_default()
    }
}

pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
        })
        .collect()
}

/// `whsec_<base64>` → key bytes (Standard Webhooks).
pub fn decode_whsec(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = text
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("not base64 after whsec_: {e}"))?;
    if key.len() < 16 {
        return Err("key must be at least 16 bytes".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_configuration_at_all_is_sandbox_mode() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.mode, Mode::Sandbox);
        assert_eq!(c.jwt_secret.expose(), DEV_JWT_SECRET);
        assert_eq!(c.reconcile_after, Duration::from_secs(120));
        assert_eq!(c.dunning_schedule.len(), 3);
        assert_eq!(c.refusal_grace, Duration::from_secs(3 * 86_400));
        assert_eq!(c.provider_timeout, Duration::from_secs(10));
        assert!(c
            .yookassa
            .allowed_ips
            .iter()
            .any(|n| n.contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap())));
    }

    #[test]
    fn the_pool_size_is_a_whole_number_from_1_to_1000() {
        assert_eq!(cfg(&[]).unwrap().database_pool_size, 8);
        let c = cfg(&[("DATABASE_POOL_SIZE", "6")]).unwrap();
        assert_eq!(c.database_pool_size, 6);
        for bad in ["0", "-1", "1001", "many"] {
            let e = cfg(&[("DATABASE_POOL_SIZE", bad)]).unwrap_err();
            assert_eq!(e.var, "DATABASE_POOL_SIZE", "{bad}");
        }
    }

    #[test]
    fn the_provider_timeout_is_from_100ms_to_its_10s_default() {
        let c = cfg(&[("PROVIDER_TIMEOUT", "1s")]).unwrap();
        assert_eq!(c.provider_timeout, Duration::from_secs(1));
        for bad in ["50ms", "11s", "0s", "soon"] {
            let e = cfg(&[("PROVIDER_TIMEOUT", bad)]).unwrap_err();
            assert_eq!(e.var, "PROVIDER_TIMEOUT", "{bad}");
        }
    }

    #[test]
    fn http_limits_have_defaults_and_refuse_zero() {
        let c = cfg(&[]).unwrap().http;
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.max_connections, 1024);
        let c = cfg(&[("HTTP_IDLE_TIMEOUT", "2m"), ("HTTP_MAX_CONNECTIONS", "64")]).unwrap();
        assert_eq!(c.http.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.http.max_connections, 64);
        for (var, bad) in [
            ("HTTP_HEADER_READ_TIMEOUT", "0s"),
            ("HTTP_BODY_READ_TIMEOUT", "soon"),
            ("HTTP_MAX_CONNECTIONS", "0"),
        ] {
            assert_eq!(cfg(&[(var, bad)]).unwrap_err().var, var, "{bad}");
        }
    }

    #[test]
    fn a_test_key_is_test_mode_and_needs_a_jwt_key() {
        let base = [
            ("YOOKASSA_SHOP_ID", "1"),
            ("YOOKASSA_SECRET_KEY", "test_abc"),
        ];
        assert_eq!(cfg(&base).unwrap_err().var, "JWT_SECRET_KEY");
        let c = cfg(&[base[0], base[1], ("JWT_SECRET_KEY", "k")]).unwrap();
        assert_eq!(c.mode, Mode::Test);
        assert!(!c.mode.livemode());
        assert!(!c
            .yookassa
            .allowed_ips
            .iter()
            .any(|n| n.contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap())));
    }

    #[test]
    fn live_mode_refuses_test_credentials() {
        let e = cfg(&[
            ("YOOKASSA_SHOP_ID", "1"),
            ("YOOKASSA_SECRET_KEY", "test_abc"),
            ("JWT_SECRET_KEY", "k"),
            ("BILLING_MODE", "live"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "BILLING_MODE");
    }

    #[test]
    fn each_provider_has_its_own_mode() {
        use crate::domain::PaySystem;
        let yk_test = [
            ("YOOKASSA_SHOP_ID", "1"),
            ("YOOKASSA_SECRET_KEY", "test_abc"),
            ("JWT_SECRET_KEY", "k"),
            ("CLOUDPAYMENTS_API_SECRET", "s"),
        ];
        let with = |public_id: &'static str, mode: Option<&'static str>| {
            let mut vars = yk_test.to_vec();
            vars.push(("CLOUDPAYMENTS_PUBLIC_ID", public_id));
            vars.extend(mode.map(|m| ("CLOUDPAYMENTS_MODE", m)));
            cfg(&vars)
        };
        let c = with("pk_0123", None).unwrap();
        assert_eq!(c.provider_mode(PaySystem::YooKassa), Mode::Test);
        assert_eq!(c.provider_mode(PaySystem::CloudPayments), Mode::Live);
        assert!(c.livemode(PaySystem::CloudPayments) && !c.livemode(PaySystem::YooKassa));
        let c = with("test_api_00000000000000000000002", None).unwrap();
        assert_eq!(c.provider_mode(PaySystem::CloudPayments), Mode::Test);
        let c = with("pk_0123", Some("test")).unwrap();
        assert_eq!(c.provider_mode(PaySystem::CloudPayments), Mode::Test);
        let c = with("test_api_0", Some("live")).unwrap();
        assert_eq!(c.provider_mode(PaySystem::CloudPayments), Mode::Live);
        assert_eq!(
            with("pk_0123", Some("sandbox")).unwrap_err().var,
            "CLOUDPAYMENTS_MODE"
        );
    }

    #[test]
    fn live_billing_mode_demands_every_configured_provider_live() {
        let live = [
            ("YOOKASSA_SHOP_ID", "1"),
            ("YOOKASSA_SECRET_KEY", "live_abc"),
            ("JWT_SECRET_KEY", "k"),
            ("BILLING_MODE", "live"),
        ];
        assert!(cfg(&live).is_ok(), "YooKassa alone, live");
        let mut with_cp = live.to_vec();
        with_cp.push(("CLOUDPAYMENTS_PUBLIC_ID", "pk_0123"));
        with_cp.push(("CLOUDPAYMENTS_API_SECRET", "s"));
        assert!(cfg(&with_cp).is_ok(), "both live");
        with_cp.push(("CLOUDPAYMENTS_MODE", "test"));
        assert_eq!(cfg(&with_cp).unwrap_err().var, "BILLING_MODE");
    }

    #[test]
    fn receipts_are_off_by_default_and_listed_per_provider() {
        use crate::domain::PaySystem;
        assert!(cfg(&[]).unwrap().receipts.is_empty());
        assert!(cfg(&[("RECEIPTS", "off")]).unwrap().receipts.is_empty());
        let c = cfg(&[("RECEIPTS", "yookassa, cloudpayments")]).unwrap();
        assert!(c.receipts_on(PaySystem::YooKassa) && c.receipts_on(PaySystem::CloudPayments));
        let c = cfg(&[("RECEIPTS", "cloudpayments")]).unwrap();
        assert!(!c.receipts_on(PaySystem::YooKassa));
        assert_eq!(cfg(&[("RECEIPTS", "on")]).unwrap_err().var, "RECEIPTS");
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for (var, value) in [
            ("RECONCILE_AFTER", "soon"),
            ("DUNNING_SCHEDULE", "1d,x"),
            ("REFUSAL_GRACE", "3 days"),
            ("LISTEN_ADDR", "nowhere"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("OPS_WEBHOOK_SECRET", "plain"),
            ("LOG_FORMAT", "xml"),
            ("YOOKASSA_API_URL", "ftp://x"),
        ] {
            assert_eq!(cfg(&[(var, value)]).unwrap_err().var, var);
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let c = cfg(&[]).unwrap();
        assert!(!format!("{c:?}").contains(DEV_JWT_SECRET));
    }
}
