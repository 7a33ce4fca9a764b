//! Validated settings: the second stage of argument handling. Every check of a
//! flag's value happens here, and every message names the flag at fault.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use crate::backend::mas::MasCredentials;
use crate::backend::synapse::SynapseClient;
use crate::cli::{Cli, FindArgs, ServerArgs, SnapshotArgs};
use crate::input::{Columns, Source};
use crate::pace::Pacing;
use crate::retry::Policy;
use crate::seal::{Sealer, Sealing};
use crate::source::SourceSpec;
use crate::user_id::check_server_name;

/// A mistake in how the tool was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(msg.into()).into())
}

/// Where passwords come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Passwords {
    Generate { length: usize },
    FromColumn,
    None,
}

/// The server and how to talk to it: what every command needs.
pub struct Server {
    pub homeserver: String,
    pub token: SecretString,
    pub timeout: Duration,
    pub retry: Policy,
    pub ca_cert: Option<reqwest::Certificate>,
    pub mas: MasSettings,
    pub allow_insecure_http: bool,
    /// `--verbose`: a line per request.
    pub verbose: bool,
}

impl Server {
    /// The admin API client, keeping up to `pool` idle connections.
    pub fn client(&self, pool: usize) -> anyhow::Result<SynapseClient> {
        Ok(SynapseClient::new(
            &self.homeserver,
            &self.token,
            self.timeout,
            self.ca_cert.clone(),
            pool,
        )?
        .verbose(self.verbose))
    }
}

pub struct Settings {
    pub source: Source,
    pub columns: Columns,
    pub server: Server,
    pub output: PathBuf,
    pub resume: bool,
    pub server_name: Option<String>,
    /// `--rate`, fixed or auto.
    pub pacing: Pacing,
    pub burst: NonZeroU32,
    /// Users at once; with `--rate auto`, the most.
    pub concurrency: usize,
    pub dry_run: bool,
    pub include_erased: bool,
    pub passwords: Passwords,
    /// `--left-since` in Unix milliseconds, when `--rejoin-rooms` is given.
    pub rejoin_rooms_since: Option<i64>,
    pub unlock: bool,
    pub quiet: bool,
    pub show_progress: bool,
    /// `--summary-json`: where the JSON summary goes.
    pub summary_json: Option<PathBuf>,
    /// `--restore-from`: where the before-images come from.
    pub restore_from: Option<SourceSpec>,
    /// `--encrypt-to`, `--encrypt-to-file`: the recipients every password is
    /// sealed to before it is written anywhere.
    pub sealer: Option<Arc<Sealer>>,
    /// Things the admin should hear about how the tool was called (a
    /// deprecated flag), printed before the run.
    pub warnings: Vec<String>,
}

impl Settings {
    /// How this run records passwords: in clear, or sealed (to whom).
    pub fn sealing(&self) -> Sealing {
        self.sealer.as_ref().map_or(Sealing::Clear, |s| s.sealing())
    }
}

/// `find`'s settings.
pub struct FindSettings {
    pub server: Server,
    pub output: PathBuf,
    /// `--left-since` in Unix milliseconds.
    pub since: Option<i64>,
    /// `--left-until` in Unix milliseconds.
    pub until: Option<i64>,
    /// Requests per second; `None` for no limit.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub page_size: u32,
    pub quiet: bool,
    pub show_progress: bool,
    /// As `Settings::warnings`.
    pub warnings: Vec<String>,
}

/// `snapshot`'s settings.
pub struct SnapshotSettings {
    pub server: Server,
    /// INPUT; `None` for every active local user.
    pub input: Option<Source>,
    /// `--column`.
    pub column: Option<String>,
    pub server_name: Option<String>,
    pub output: PathBuf,
    /// Requests per second; `None` for no limit.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub quiet: bool,
    pub show_progress: bool,
    /// As `Settings::warnings`.
    pub warnings: Vec<String>,
}

impl SnapshotSettings {
    /// Validates `snapshot`'s arguments, as `Settings::from_cli` does the main command's.
    pub fn from_args(args: SnapshotArgs, env: EnvSecrets) -> anyhow::Result<Self> {
        let (server, warnings) = check_server(&args.server, args.console.verbose, env)?;
        let rate = check_rate(args.rate, "requests")?;
        check_concurrency(args.concurrency)?;
        if let Some(name) = &args.server_name {
            check_server_name(name).map_err(|_| {
                UsageError(format!("--server-name {name}: not a valid server name"))
            })?;
        }
        if args.column.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return usage("--column: give a column name");
        }
        Ok(SnapshotSettings {
            server,
            input: args.input.as_deref().map(Source::from_arg),
            column: args.column,
            server_name: args.server_name,
            output: args.output,
            rate,
            concurrency: args.concurrency,
            quiet: args.console.quiet,
            show_progress: !args.console.quiet && !args.console.no_progress,
            warnings,
        })
    }
}

/// The longest `--max-outage`: a day.
const MAX_OUTAGE_LIMIT: f64 = 86_400.0;

pub const TOKEN_ENV: &str = "MATRIX_ADMIN_TOKEN";
pub const MAS_TOKEN_ENV: &str = "MAS_ADMIN_TOKEN";
pub const MAS_CLIENT_ID_ENV: &str = "MAS_CLIENT_ID";
pub const MAS_CLIENT_SECRET_ENV: &str = "MAS_CLIENT_SECRET";

/// The secrets the environment may hold, read once by the binary and passed
/// in, so tests need not touch the process environment.
#[derive(Default)]
pub struct EnvSecrets {
    pub matrix_token: Option<String>,
    pub mas_token: Option<String>,
    pub mas_client_id: Option<String>,
    pub mas_client_secret: Option<String>,
}

impl EnvSecrets {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        EnvSecrets {
            matrix_token: var(TOKEN_ENV),
            mas_token: var(MAS_TOKEN_ENV),
            mas_client_id: var(MAS_CLIENT_ID_ENV),
            mas_client_secret: var(MAS_CLIENT_SECRET_ENV),
        }
    }
}

/// What the tool needs for a server whose logins belong to MAS.
pub struct MasSettings {
    /// `--mas-url`: MAS's base URL, instead of the issuer the homeserver advertises.
    pub url: Option<String>,
    /// `None` when none were given: a delegating server then stops the run
    /// in the preflight, naming the variables.
    pub credentials: Option<MasCredentials>,
}

impl Settings {
    /// Validates the parsed arguments and the secrets from the environment.
    pub fn from_cli(cli: Cli, env: EnvSecrets) -> anyhow::Result<Self> {
        // clap requires both unless --generate or a subcommand, which never get here.
        let (Some(input), Some(output)) = (cli.input.clone(), cli.output.clone()) else {
            return usage("give INPUT, --homeserver URL and --output PATH");
        };
        if input.as_os_str() == "find" && !input.exists() {
            return usage(
                "no file named find: to list the deactivated users, put find first: \
                 matrix-reactivate find -H URL -o users.csv",
            );
        }
        let (server, mut warnings) = check_server(&cli.server, cli.console.verbose, env)?;
        let sealer = crate::seal::from_flags(&cli.seal.encrypt_to, &cli.seal.encrypt_to_file)
            .map_err(UsageError)?;
        if sealer.is_some() && cli.no_password {
            warnings.push("--encrypt-to has nothing to seal with --no-password".into());
        }
        let pacing = pacing(&cli)?;
        let burst = NonZeroU32::new(cli.burst)
            .ok_or_else(|| UsageError("--burst 0: give 1 or more".into()))?;
        check_concurrency(cli.concurrency)?;
        let passwords = passwords(&cli)?;
        if let Some(name) = &cli.server_name {
            check_server_name(name).map_err(|_| {
                UsageError(format!("--server-name {name}: not a valid server name"))
            })?;
        }
        if let Some(col) = &cli.column {
            if col.trim().is_empty() {
                return usage("--column: give a column name");
            }
        }
        let rejoin_rooms_since = match (&cli.left_since, cli.rejoin_rooms) {
            (Some(t), true) => Some(parse_time("--left-since", t)?),
            _ => None,
        };
        let restore_from = match &cli.restore_from {
            Some(arg) => Some(
                SourceSpec::parse(arg)
                    .map_err(|why| UsageError(format!("--restore-from: {why}")))?,
            ),
            None => None,
        };

        Ok(Settings {
            source: Source::from_arg(&input),
            columns: Columns {
                user: cli.column,
                password: cli.password_column,
                rooms: cli.rooms_column,
            },
            server,
            output,
            resume: cli.resume,
            server_name: cli.server_name,
            pacing,
            burst,
            concurrency: cli.concurrency,
            dry_run: cli.dry_run,
            include_erased: cli.include_erased,
            passwords,
            rejoin_rooms_since,
            unlock: cli.unlock,
            quiet: cli.console.quiet,
            show_progress: !cli.console.quiet && !cli.console.no_progress,
            summary_json: cli.summary_json,
            restore_from,
            sealer: sealer.map(Arc::new),
            warnings,
        })
    }
}

impl FindSettings {
    /// Validates `find`'s arguments, as `Settings::from_cli` does the main command's.
    pub fn from_args(args: FindArgs, env: EnvSecrets) -> anyhow::Result<Self> {
        let (server, warnings) = check_server(&args.server, args.console.verbose, env)?;
        let rate = check_rate(args.rate, "requests")?;
        check_concurrency(args.concurrency)?;
        if !(1..=10_000).contains(&args.page_size) {
            return usage(format!(
                "--page-size {}: give 1 to 10000 users per list request",
                args.page_size
            ));
        }
        let since = (args.left_since.as_deref())
            .map(|t| parse_time("--left-since", t))
            .transpose()?;
        let until = (args.left_until.as_deref())
            .map(|t| parse_time("--left-until", t))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if u <= s {
                return usage(format!(
                    "--left-until {}: it must come after --left-since {}",
                    args.left_until.unwrap_or_default(),
                    args.left_since.unwrap_or_default()
                ));
            }
        }
        Ok(FindSettings {
            server,
            output: args.output,
            since,
            until,
            rate,
            concurrency: args.concurrency,
            page_size: args.page_size,
            quiet: args.console.quiet,
            show_progress: !args.console.quiet && !args.console.no_progress,
            warnings,
        })
    }
}

/// The flags every command shares: where the server is, the tokens (the
/// admin's, and MAS's for a server whose logins belong to it), how requests
/// are sent and retried, and `--verbose`. Also returns the warnings about how
/// the tool was called.
fn check_server(
    args: &ServerArgs,
    verbose: bool,
    mut env: EnvSecrets,
) -> anyhow::Result<(Server, Vec<String>)> {
    let Some(raw) = &args.homeserver else {
        return usage("--homeserver: give the server's URL (or set MATRIX_HOMESERVER)");
    };
    let homeserver = check_homeserver(raw, args.allow_insecure_http)?;
    let token = read_token(args.token_file.as_deref(), env.matrix_token.take())?;
    let mas = mas_settings(args, env)?;
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 3600.0) {
        return usage(format!(
            "--timeout {}: give 0 < SECONDS ≤ 3600",
            args.timeout
        ));
    }
    if args.max_attempts == 0 {
        return usage("--max-attempts 0: give at least 1 (the first try counts)");
    }
    let (max_outage, warnings) = outage_flags(args)?;
    let ca_cert = args.ca_cert.as_deref().map(read_ca_cert).transpose()?;
    let server = Server {
        homeserver,
        token,
        timeout: Duration::from_secs_f64(args.timeout),
        retry: Policy {
            attempts: args.max_attempts,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_outage: Some(max_outage),
        },
        ca_cert,
        mas,
        allow_insecure_http: args.allow_insecure_http,
        verbose,
    };
    Ok((server, warnings))
}

/// The default of `--max-slowdown`.
pub const MAX_SLOWDOWN: f64 = 2.0;

/// `--rate` (a number or auto) with `--max-rate` and `--max-slowdown`.
fn pacing(cli: &Cli) -> anyhow::Result<Pacing> {
    if cli.rate.trim() != "auto" {
        for (flag, given) in [
            ("--max-rate", cli.max_rate.is_some()),
            ("--max-slowdown", cli.max_slowdown.is_some()),
        ] {
            if given {
                return usage(format!(
                    "{flag} is for --rate auto; give --rate auto with it"
                ));
            }
        }
        let rate: f64 = cli.rate.trim().parse().map_err(|_| {
            UsageError(format!(
                "--rate {}: give a number of reactivations per second (0 = no limit) or auto",
                cli.rate
            ))
        })?;
        return Ok(Pacing::Fixed {
            rate: check_rate(rate, "reactivations")?,
        });
    }
    let max_rate = match cli.max_rate {
        None => None,
        Some(r) if r.is_finite() && r >= 0.001 => Some(r),
        Some(r) => {
            return usage(format!(
                "--max-rate {r}: give reactivations per second, 0.001 or more"
            ))
        }
    };
    let max_slowdown = cli.max_slowdown.unwrap_or(MAX_SLOWDOWN);
    if !(max_slowdown.is_finite() && (1.1..=100.0).contains(&max_slowdown)) {
        return usage(format!(
            "--max-slowdown {max_slowdown}: give how many times slower than idle the server \
             may answer, from 1.1 to 100 (default {MAX_SLOWDOWN})"
        ));
    }
    Ok(Pacing::Auto {
        max_rate,
        max_slowdown,
    })
}

/// `--rate`: `what` per second, 0 for no limit (`None`).
fn check_rate(rate: f64, what: &str) -> anyhow::Result<Option<f64>> {
    if !(rate.is_finite() && rate >= 0.0) {
        return usage(format!(
            "--rate {rate}: give a number of {what} per second, 0 or more (0 = no limit)"
        ));
    }
    if rate > 0.0 && rate < 0.001 {
        return usage(format!(
            "--rate {rate}: too slow to be meant; the smallest is 0.001 (one per 1,000 s)"
        ));
    }
    Ok((rate > 0.0).then_some(rate))
}

fn check_concurrency(n: usize) -> anyhow::Result<()> {
    if !(1..=1024).contains(&n) {
        return usage(format!(
            "--concurrency {n}: give 1 to 1024 requests in flight"
        ));
    }
    Ok(())
}

/// `--max-outage`, checked, and the warning for the flag it replaced.
fn outage_flags(args: &ServerArgs) -> anyhow::Result<(Duration, Vec<String>)> {
    let secs = args.max_outage;
    if !(secs.is_finite() && (0.0..=MAX_OUTAGE_LIMIT).contains(&secs)) {
        return usage(format!(
            "--max-outage {secs}: give 0 ≤ SECONDS ≤ {MAX_OUTAGE_LIMIT}"
        ));
    }
    // Accepted so that old runbooks still run; a count of requests has no
    // sensible translation into a length of time, so it is ignored.
    let warnings = args
        .max_consecutive_failures
        .map(|n| {
            format!(
                "--max-consecutive-failures {n} is ignored: the run now waits for an \
                 unreachable server and stops only when it stays away longer than \
                 --max-outage SECONDS (now {secs})"
            )
        })
        .into_iter()
        .collect();
    Ok((Duration::from_secs_f64(secs), warnings))
}

/// The base URL, checked: http(s) only, and plain http only to a loopback host
/// unless the admin says otherwise.
fn check_homeserver(raw: &str, allow_insecure: bool) -> anyhow::Result<String> {
    check_base_url("--homeserver", raw, allow_insecure)
}

/// A base URL that a token will be sent to, checked as `check_homeserver`
/// says; `flag` names where it came from in messages.
pub fn check_base_url(flag: &str, raw: &str, allow_insecure: bool) -> anyhow::Result<String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        UsageError(format!(
            "{flag} {raw}: not a URL ({e}); give e.g. https://matrix.example.org"
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback && !allow_insecure {
                return usage(format!(
                    "{flag} {raw}: plain http:// would send the admin token across the \
                     network in clear; use https://, or add --allow-insecure-http if the \
                     network is trusted"
                ));
            }
        }
        other => {
            return usage(format!(
                "{flag} {raw}: scheme {other}:// is not supported; use https://"
            ))
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return usage(format!(
            "{flag} {raw}: give the base URL only, without ?query or #fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return usage(format!(
            "{flag}: the URL must not carry credentials; give tokens in the environment or a file"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Where passwords come from: `--no-password`, `--password-column`, or
/// generated with `--password-length`.
fn passwords(cli: &Cli) -> anyhow::Result<Passwords> {
    if cli.no_password {
        return Ok(Passwords::None);
    }
    if cli.password_column.is_some() {
        return Ok(Passwords::FromColumn);
    }
    let range = crate::password::MIN_LENGTH..=crate::password::MAX_LENGTH;
    if !range.contains(&cli.password_length) {
        return usage(format!(
            "--password-length {}: give {} to {}",
            cli.password_length,
            range.start(),
            range.end()
        ));
    }
    Ok(Passwords::Generate {
        length: cli.password_length,
    })
}

/// `--mas-url` and the MAS credentials: a fixed token (`--mas-token-file`, or
/// `MAS_ADMIN_TOKEN`) or a client (`MAS_CLIENT_ID` + `MAS_CLIENT_SECRET`);
/// never on the command line.
fn mas_settings(args: &ServerArgs, env: EnvSecrets) -> anyhow::Result<MasSettings> {
    let url = args
        .mas_url
        .as_deref()
        .map(|u| check_base_url("--mas-url", u, args.allow_insecure_http))
        .transpose()?;
    let fixed = match (&args.mas_token_file, env.mas_token) {
        (Some(path), _) => Some(read_secret(path, "--mas-token-file")?),
        (None, Some(t)) => Some(check_secret(&t, MAS_TOKEN_ENV)?),
        (None, None) => None,
    };
    let client = match (env.mas_client_id, env.mas_client_secret) {
        (Some(id), Some(secret)) => Some((id, check_secret(&secret, MAS_CLIENT_SECRET_ENV)?)),
        (Some(_), None) => {
            return usage(format!(
                "{MAS_CLIENT_ID_ENV} is set but {MAS_CLIENT_SECRET_ENV} is not: give both"
            ))
        }
        (None, Some(_)) => {
            return usage(format!(
                "{MAS_CLIENT_SECRET_ENV} is set but {MAS_CLIENT_ID_ENV} is not: give both"
            ))
        }
        (None, None) => None,
    };
    let credentials = match (fixed, client) {
        (Some(_), Some(_)) => {
            return usage(format!(
                "MAS credentials given twice: use {MAS_CLIENT_ID_ENV}/{MAS_CLIENT_SECRET_ENV} \
                 or a fixed token ({MAS_TOKEN_ENV} or --mas-token-file), not both"
            ))
        }
        (Some(t), None) => Some(MasCredentials::Fixed(t)),
        (None, Some((id, secret))) => Some(MasCredentials::Client { id, secret }),
        (None, None) => None,
    };
    Ok(MasSettings { url, credentials })
}

fn read_secret(path: &Path, flag: &str) -> anyhow::Result<SecretString> {
    let origin = format!("{flag} {}", path.display());
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{origin}: cannot read it"))?;
    check_secret(&text, &origin)
}

/// A token or secret as given, trimmed; refused when empty or with white space inside.
fn check_secret(text: &str, origin: &str) -> anyhow::Result<SecretString> {
    let token = text.trim();
    if token.is_empty() {
        return usage(format!("{origin}: the token is empty"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return usage(format!(
            "{origin}: the token contains white space; it must be the token alone"
        ));
    }
    Ok(SecretString::from(token.to_owned()))
}

fn read_token(file: Option<&Path>, env_token: Option<String>) -> anyhow::Result<SecretString> {
    match (file, env_token) {
        (Some(path), _) => read_secret(path, "--token-file"),
        (None, Some(t)) => check_secret(&t, TOKEN_ENV),
        (None, None) => usage(format!(
            "no access token: set {TOKEN_ENV} or give --token-file PATH \
             (the token of a server admin)"
        )),
    }
}

/// A time flag (`--left-since`, `--left-until`): Unix milliseconds, or an
/// RFC 3339 time with its offset.
pub fn parse_time(flag: &str, text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<i64>()
            .map_err(|_| UsageError(format!("{flag} {text}: too large for a time in ms")).into());
    }
    let when = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            UsageError(format!(
                "{flag} {text}: not an RFC 3339 time ({e}); give e.g. \
                 2026-11-26T01:00:00Z, or Unix time in milliseconds"
            ))
        })?;
    Ok((when.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn read_ca_cert(path: &Path) -> anyhow::Result<reqwest::Certificate> {
    let pem = std::fs::read(path)
        .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("--ca-cert {}: not a PEM certificate", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(args: &[&str]) -> anyhow::Result<Settings> {
        let mut argv = vec!["matrix-reactivate", "in.csv", "-o", "out.csv"];
        argv.extend_from_slice(args);
        Settings::from_cli(Cli::try_parse_from(argv)?, matrix_token("syt_token"))
    }

    fn matrix_token(t: &str) -> EnvSecrets {
        EnvSecrets {
            matrix_token: Some(t.into()),
            ..EnvSecrets::default()
        }
    }

    fn usage_text(args: &[&str]) -> String {
        let e = settings(args).err().expect("a usage error");
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
        e.to_string()
    }

    #[test]
    fn sealing_flags_are_checked_and_name_the_flag_file_and_line() {
        let h = ["-H", "https://m.example.org"];
        let public = age::x25519::Identity::generate().to_public().to_string();
        let s = settings(&[h[0], h[1], "--encrypt-to", &public]).unwrap();
        assert_eq!(s.sealing(), Sealing::SealedTo(vec![public.clone()]));
        assert_eq!(settings(&[h[0], h[1]]).unwrap().sealing(), Sealing::Clear);
        let t = usage_text(&[h[0], h[1], "--encrypt-to", "age1nope"]);
        assert!(t.starts_with("--encrypt-to: age1nope"), "{t}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("desk.txt");
        std::fs::write(&file, format!("# desk\n{public}\nssh-ed25519 broken\n")).unwrap();
        let f = file.to_str().unwrap();
        let t = usage_text(&[h[0], h[1], "--encrypt-to-file", f]);
        assert!(t.contains("desk.txt, line 3"), "{t}");
        std::fs::write(&file, "# nobody\n").unwrap();
        let t = usage_text(&[h[0], h[1], "--encrypt-to-file", f]);
        assert!(t.contains("no recipient in it"), "{t}");
        let gone = dir.path().join("gone.txt");
        let t = usage_text(&[h[0], h[1], "--encrypt-to-file", gone.to_str().unwrap()]);
        assert!(t.contains("gone.txt: cannot read it"), "{t}");
        let s = settings(&[h[0], h[1], "--no-password", "--encrypt-to", &public]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("nothing to seal")));
    }

    #[test]
    fn insecure_http_only_on_loopback() {
        for ok in [
            "http://127.0.0.1:8008",
            "http://localhost:8008/",
            "http://[::1]:8008",
            "https://matrix.example.org",
        ] {
            assert!(settings(&["-H", ok]).is_ok(), "{ok}");
        }
        let t = usage_text(&["-H", "http://matrix.example.org"]);
        assert!(t.contains("--allow-insecure-http"), "{t}");
        assert!(settings(&["-H", "http://matrix.example.org", "--allow-insecure-http"]).is_ok());
        assert!(usage_text(&["-H", "ftp://x"]).contains("--homeserver"));
        assert!(usage_text(&["-H", "not a url"]).contains("--homeserver"));
    }

    #[test]
    fn base_url_keeps_its_path() {
        let s = settings(&["-H", "https://example.org/matrix/"]).unwrap();
        assert_eq!(s.server.homeserver, "https://example.org/matrix");
    }

    #[test]
    fn flag_values_are_checked() {
        let h = ["-H", "https://m.example.org"];
        let with = |extra: &[&str]| {
            let mut v = h.to_vec();
            v.extend_from_slice(extra);
            usage_text(&v)
        };
        assert!(with(&["--rate=-1"]).contains("--rate"));
        assert!(with(&["--rate", "NaN"]).contains("--rate"));
        assert!(with(&["--burst", "0"]).contains("--burst"));
        assert!(with(&["--concurrency", "0"]).contains("--concurrency"));
        assert!(with(&["--password-length", "11"]).contains("--password-length"));
        assert!(with(&["--password-length", "513"]).contains("--password-length"));
        assert!(with(&["--server-name", "bad name"]).contains("--server-name"));
        assert!(with(&["--timeout", "0"]).contains("--timeout"));
        assert!(with(&["--max-outage=-1"]).contains("--max-outage"));
        assert!(with(&["--max-outage", "inf"]).contains("--max-outage"));
        let s = settings(&["-H", "https://m.example.org"]).unwrap();
        assert_eq!(s.server.retry.max_outage, Some(Duration::from_secs(300)));
        let s = settings(&["-H", "https://m.example.org", "--max-outage", "0.5"]).unwrap();
        assert_eq!(s.server.retry.max_outage, Some(Duration::from_millis(500)));
        let s = settings(&["-H", "https://m.example.org", "--rate", "0"]).unwrap();
        assert_eq!(s.pacing, Pacing::Fixed { rate: None });
        let s = settings(&["-H", "https://m.example.org", "--rate", "0.5"]).unwrap();
        assert_eq!(s.pacing, Pacing::Fixed { rate: Some(0.5) });
    }

    #[test]
    fn rate_auto_and_its_flags() {
        let h = ["-H", "https://m.example.org"];
        let with = |extra: &[&str]| {
            let mut v = h.to_vec();
            v.extend_from_slice(extra);
            v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let auto = |extra: &[&str]| {
            let v = with(extra);
            settings(&v.iter().map(String::as_str).collect::<Vec<_>>()).map(|s| s.pacing)
        };
        let text = |extra: &[&str]| {
            let v = with(extra);
            usage_text(&v.iter().map(String::as_str).collect::<Vec<_>>())
        };
        assert_eq!(
            auto(&["--rate", "auto"]).unwrap(),
            Pacing::Auto {
                max_rate: None,
                max_slowdown: MAX_SLOWDOWN
            }
        );
        assert_eq!(
            auto(&[
                "--rate",
                "auto",
                "--max-rate",
                "30",
                "--max-slowdown",
                "1.5"
            ])
            .unwrap(),
            Pacing::Auto {
                max_rate: Some(30.0),
                max_slowdown: 1.5
            }
        );
        let t = text(&["--rate", "fast"]);
        assert!(
            t.starts_with("--rate fast:") && t.contains("or auto"),
            "{t}"
        );
        let t = text(&["--max-rate", "3"]);
        assert!(t.starts_with("--max-rate is for --rate auto"), "{t}");
        let t = text(&["--rate", "2", "--max-slowdown", "3"]);
        assert!(t.starts_with("--max-slowdown is for --rate auto"), "{t}");
        for bad in ["1", "0.5", "NaN", "1000"] {
            let t = text(&["--rate", "auto", "--max-slowdown", bad]);
            assert!(t.starts_with("--max-slowdown"), "{bad}: {t}");
        }
        for bad in ["0", "-1", "inf"] {
            let t = text(&["--rate", "auto", &format!("--max-rate={bad}")]);
            assert!(t.starts_with("--max-rate"), "{bad}: {t}");
        }
    }

    #[test]
    fn the_replaced_flag_is_accepted_with_a_warning() {
        let h = ["-H", "https://m.example.org"];
        let s = settings(&h).unwrap();
        assert!(s.warnings.is_empty());
        let s = settings(&[h[0], h[1], "--max-consecutive-failures", "20"]).unwrap();
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("--max-outage"), "{:?}", s.warnings);
        assert_eq!(s.server.retry.max_outage, Some(Duration::from_secs(300)));
    }

    #[test]
    fn left_since_forms() {
        assert_eq!(
            parse_time("--left-since", "1764118800000").unwrap(),
            1_764_118_800_000
        );
        assert_eq!(
            parse_time("--left-since", "2025-11-26T01:00:00Z").unwrap(),
            1_764_118_800_000
        );
        assert_eq!(
            parse_time("--left-since", "2025-11-26T02:00:00+01:00").unwrap(),
            1_764_118_800_000
        );
        assert!(parse_time("--left-since", "yesterday").is_err());
        let h = ["-H", "https://m.example.org"];
        let t = usage_text(&[h[0], h[1], "--rejoin-rooms", "--left-since", "26/11/2025"]);
        assert!(t.contains("--left-since"), "{t}");
        // --rejoin-rooms without --left-since is refused by the parser.
        assert!(settings(&[h[0], h[1], "--rejoin-rooms"]).is_err());
        let s = settings(&[h[0], h[1], "--rejoin-rooms", "--left-since", "1000"]).unwrap();
        assert_eq!(s.rejoin_rooms_since, Some(1000));
    }

    fn find_settings(args: &[&str]) -> anyhow::Result<FindSettings> {
        let mut argv = vec![
            "m",
            "find",
            "-H",
            "https://m.example.org",
            "-o",
            "users.csv",
        ];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Some(crate::cli::Command::Find(a)) => FindSettings::from_args(a, matrix_token("syt_t")),
            _ => panic!("find parses as the subcommand"),
        }
    }

    #[test]
    fn find_flags_are_checked_and_name_the_flag() {
        let s = find_settings(&[]).unwrap();
        assert_eq!((s.rate, s.concurrency, s.page_size), (Some(20.0), 4, 500));
        assert_eq!((s.since, s.until), (None, None));
        let s = find_settings(&[
            "--left-since",
            "1000",
            "--left-until",
            "2026-11-26T01:00:00Z",
        ])
        .unwrap();
        assert_eq!((s.since, s.until), (Some(1000), Some(1_795_654_800_000)));
        let err = |args: &[&str]| {
            let e = find_settings(args).err().expect("a usage error");
            assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
            e.to_string()
        };
        assert!(err(&["--page-size", "0"]).contains("--page-size"));
        assert!(err(&["--page-size", "10001"]).contains("--page-size"));
        assert!(err(&["--left-until", "soon"]).contains("--left-until soon"));
        assert!(err(&["--left-since", "2000", "--left-until", "2000"]).contains("--left-until"));
        assert!(err(&["--rate=-1"]).contains("requests per second"));
        assert!(err(&["--concurrency", "0"]).contains("--concurrency"));
        // The main command's flags are not find's.
        assert!(find_settings(&["--dry-run"]).is_err());
    }

    #[test]
    fn find_shares_the_server_flags_mas_credentials_and_max_outage() {
        let args = [
            "m",
            "find",
            "-H",
            "https://m.example.org",
            "-o",
            "u.csv",
            "--max-outage",
            "60",
            "--max-consecutive-failures",
            "3",
            "-v",
            "--mas-url",
            "https://auth.m.example.org",
        ];
        let Some(crate::cli::Command::Find(a)) = Cli::try_parse_from(args).unwrap().command else {
            panic!("find parses as the subcommand");
        };
        let env = EnvSecrets {
            matrix_token: Some("mct_a".into()),
            mas_client_id: Some("01ID".into()),
            mas_client_secret: Some("sec".into()),
            mas_token: None,
        };
        let s = FindSettings::from_args(a, env).unwrap();
        assert_eq!(s.server.retry.max_outage, Some(Duration::from_secs(60)));
        assert!(s.server.verbose);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert_eq!(
            s.server.mas.url.as_deref(),
            Some("https://auth.m.example.org")
        );
        assert!(matches!(
            s.server.mas.credentials,
            Some(MasCredentials::Client { .. })
        ));
    }

    #[test]
    fn token_sources() {
        let cli = Cli::try_parse_from(["m", "in.csv", "-o", "o", "-H", "https://x.org"]).unwrap();
        let e = Settings::from_cli(cli, EnvSecrets::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains(TOKEN_ENV), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "syt_abc\n").unwrap();
        let cli = Cli::try_parse_from([
            "m",
            "in.csv",
            "-o",
            "o",
            "-H",
            "https://x.org",
            "--token-file",
            f.to_str().unwrap(),
        ])
        .unwrap();
        let s = Settings::from_cli(cli, EnvSecrets::default()).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(s.server.token.expose_secret(), "syt_abc");
    }

    #[test]
    fn mas_credentials_come_in_one_form_from_the_environment_or_a_file() {
        let cli = |extra: &[&str]| {
            let mut v = vec!["m", "in.csv", "-o", "o", "-H", "https://x.org"];
            v.extend_from_slice(extra);
            Cli::try_parse_from(v).unwrap()
        };
        let env = |id: Option<&str>, secret: Option<&str>, token: Option<&str>| EnvSecrets {
            matrix_token: Some("syt_a".into()),
            mas_client_id: id.map(Into::into),
            mas_client_secret: secret.map(Into::into),
            mas_token: token.map(Into::into),
        };
        let s = Settings::from_cli(cli(&[]), env(None, None, None)).unwrap();
        assert!(s.server.mas.credentials.is_none() && s.server.mas.url.is_none());
        let s = Settings::from_cli(cli(&[]), env(Some("01ID"), Some("sec"), None)).unwrap();
        assert!(
            matches!(s.server.mas.credentials, Some(MasCredentials::Client { ref id, .. }) if id == "01ID")
        );
        let s = Settings::from_cli(cli(&[]), env(None, None, Some("mpt_x"))).unwrap();
        assert!(matches!(
            s.server.mas.credentials,
            Some(MasCredentials::Fixed(_))
        ));

        let e = Settings::from_cli(cli(&[]), env(Some("01ID"), None, None))
            .err()
            .unwrap();
        assert!(e.to_string().contains(MAS_CLIENT_SECRET_ENV), "{e}");
        let e = Settings::from_cli(cli(&[]), env(Some("i"), Some("s"), Some("t")))
            .err()
            .unwrap();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = Settings::from_cli(
            cli(&["--mas-url", "http://auth.example.org"]),
            env(None, None, None),
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("--mas-url"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mas");
        std::fs::write(&f, " \n").unwrap();
        let e = Settings::from_cli(
            cli(&["--mas-token-file", f.to_str().unwrap()]),
            env(None, None, None),
        )
        .err()
        .unwrap();
        assert!(
            e.to_string().contains("--mas-token-file") && e.to_string().contains("empty"),
            "{e}"
        );
    }
}
