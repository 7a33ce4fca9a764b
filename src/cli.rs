//! Command-line definition: what the admin types. Values are parsed here and
//! validated in `config`; nothing in this module touches the network or files.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

const AFTER_LONG_HELP: &str = "\
EXAMPLES:
  Check first, change nothing:
    export MATRIX_ADMIN_TOKEN=syt_...
    matrix-reactivate -H https://matrix.example.org users.csv -o check.csv --dry-run

  Reactivate, with a new password per user, 2 users a second:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv --rate 2

  The run was interrupted: finish it, keeping every password already set:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv --resume

  SSO-only server, no passwords:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv --no-password

  Logins by Matrix Authentication Service (found by itself; MAS admin client in the env):
    export MATRIX_ADMIN_TOKEN=mct_...     # mas-cli manage issue-compatibility-token
    export MAS_CLIENT_ID=... MAS_CLIENT_SECRET=...   # or MAS_ADMIN_TOKEN=mpt_...
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv

  Give back the rooms they were made to leave by the deactivation at 01:00 UTC:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \
        --rejoin-rooms --left-since 2026-11-26T01:00:00Z

  In a runbook: the summary as JSON, and up to 15 minutes of server outage:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \
        --quiet --summary-json summary.json --max-outage 900

  Shell completion and the man page:
    matrix-reactivate --generate complete-bash > /etc/bash_completion.d/matrix-reactivate
    matrix-reactivate --generate man > /usr/local/share/man/man1/matrix-reactivate.1

INPUT:
  A CSV file (or - for standard input) with one user per row: full user IDs
  (@alice:example.org) or bare localparts (alice). The header row is optional.
  Optional columns give back what deactivation took, after the reactivation:
  displayname, avatar_url (mxc://), email (several separated by ;), and the
  rooms of --rooms-column.

RESULTS:
  A CSV created with mode 0600: user_id,status,password,error,line,
  rooms_rejoined,rooms_failed. One row per distinct user of the input and one
  `invalid` row per unusable line. Statuses: reactivated, would_reactivate,
  unlocked, would_unlock, already_active, not_found, erased, not_local, invalid,
  failed. Rows are written as each user finishes.

EXIT CODES:
  0    every user was reactivated, already active, or would be (--dry-run)
  1    fatal error: bad token, not an admin, unreachable server, unreadable
       input, results file exists, the server refused the token mid-run or
       stayed unreachable longer than --max-outage, ...
  2    usage error
  3    the run finished but some rows need attention (invalid, not_local,
       not_found, erased, failed, or a reactivated user whose rooms or
       profile were not all given back)
  130  interrupted (Ctrl-C or SIGTERM); run again with --resume to finish";

/// Bulk-reactivate deactivated Matrix accounts on a Synapse homeserver.
///
/// Checks every user first (an unknown ID is never created), reactivates the
/// deactivated ones through the Synapse Admin API at a steady pace, and writes
/// each user's new password and status to a results CSV as it goes.
#[derive(Debug, Parser)]
#[command(
    name = "matrix-reactivate",
    version,
    after_long_help = AFTER_LONG_HELP,
    // INPUT, -H and -o are optional to clap only for --generate.
    override_usage = "matrix-reactivate [OPTIONS] -H <URL> -o <PATH> <INPUT>\n       \
                      matrix-reactivate --generate <KIND>"
)]
pub struct Cli {
    /// CSV of users to reactivate, or - for standard input
    #[arg(value_name = "INPUT", required_unless_present = "generate")]
    pub input: Option<PathBuf>,

    /// Client-server API base URL of the homeserver, e.g. https://matrix.example.org
    #[arg(
        short = 'H',
        long,
        env = "MATRIX_HOMESERVER",
        value_name = "URL",
        required_unless_present = "generate"
    )]
    pub homeserver: Option<String>,

    /// Read the admin access token from this file (default: env MATRIX_ADMIN_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Results CSV to create (mode 0600); refused if it exists, unless --resume
    #[arg(short, long, value_name = "PATH", required_unless_present = "generate")]
    pub output: Option<PathBuf>,

    /// Continue an interrupted run that wrote to --output, keeping its passwords
    #[arg(long)]
    pub resume: bool,

    /// Column holding the users [default: user_id, mxid, user or localpart, else the only column]
    #[arg(long, value_name = "NAME")]
    pub column: Option<String>,

    /// Server name for bare localparts and for telling local users apart [default: the token user's]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Reactivations per second; decimals allowed, 0 for no limit
    #[arg(long, default_value = "5", value_name = "PER_SECOND")]
    pub rate: f64,

    /// Reactivations allowed at once before the rate applies
    #[arg(long, default_value = "1", value_name = "N")]
    pub burst: u32,

    /// Requests in flight at most
    #[arg(long, default_value = "4", value_name = "N")]
    pub concurrency: usize,

    /// Seconds before a request is abandoned and retried
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub timeout: f64,

    /// Tries per request, the first included, on 5xx and garbled answers (a 429 that says how long to wait gets 4 × N; an unreachable server is waited for, see --max-outage)
    #[arg(long, alias = "retries", default_value = "5", value_name = "N")]
    pub max_attempts: u32,

    /// Stop the run when the server stays unreachable longer than this; until then every request waits for it
    ///
    /// Unreachable: no connection, no answer within --timeout, or a gateway's
    /// 502, 503 or 504. A restart, an upgrade or a proxy reload is waited out
    /// (tries every 0.5 s at first, then less often, at most 10 s apart) and
    /// costs no user a failed row; the run goes on when the server answers.
    /// Past SECONDS the run stops with exit code 1, saved for --resume. 0 stops
    /// at the first request that cannot reach the server.
    ///
    /// This replaces --max-consecutive-failures, which counted requests and so
    /// stopped a run within seconds of a restart; that flag is still accepted
    /// (old runbooks keep working) and ignored, with a warning.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub max_outage: f64,

    /// Replaced by --max-outage; accepted and ignored, with a warning
    #[arg(long, hide = true, value_name = "N")]
    pub max_consecutive_failures: Option<u32>,

    /// Check every user and write what would happen; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Also reactivate users whose account was erased (GDPR erasure)
    #[arg(long)]
    pub include_erased: bool,

    /// Length of generated passwords (12 to 512)
    #[arg(long, default_value = "24", value_name = "N")]
    pub password_length: usize,

    /// Take each user's password from this input column instead of generating one
    #[arg(long, value_name = "NAME", conflicts_with = "no_password")]
    pub password_column: Option<String>,

    /// Reactivate without setting a password (SSO/LDAP-only servers; Synapse 1.99 or later)
    #[arg(long)]
    pub no_password: bool,

    /// Rejoin the rooms each reactivated user left at or after --left-since (Synapse 1.145+)
    #[arg(long, requires = "left_since")]
    pub rejoin_rooms: bool,

    /// When the mistaken deactivation began: RFC 3339 (2026-11-26T01:00:00Z) or Unix time in ms
    #[arg(long, value_name = "TIME", requires = "rejoin_rooms")]
    pub left_since: Option<String>,

    /// Input column of rooms to join per reactivated user (room IDs or aliases, separated by ;)
    #[arg(long, value_name = "NAME")]
    pub rooms_column: Option<String>,

    /// Also unlock locked users (a locked active user is otherwise left alone)
    #[arg(long)]
    pub unlock: bool,

    /// MAS's base URL, on a server whose logins belong to Matrix Authentication Service [default: the issuer the homeserver advertises]
    #[arg(long, env = "MAS_URL", value_name = "URL")]
    pub mas_url: Option<String>,

    /// Read a MAS admin token from this file (default: env MAS_ADMIN_TOKEN, or a client from MAS_CLIENT_ID and MAS_CLIENT_SECRET)
    #[arg(long, value_name = "PATH")]
    pub mas_token_file: Option<PathBuf>,

    /// PEM file of a CA certificate to trust, for a server behind a private CA
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Allow http:// to a host that is not loopback (the token crosses the network in clear)
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// Print nothing but errors (no progress, no summary)
    #[arg(short, long)]
    pub quiet: bool,

    /// No progress bar or progress lines
    #[arg(long)]
    pub no_progress: bool,

    /// Print one line per request: method, path, status, try number, latency
    ///
    /// On stderr, with progress as plain lines instead of a bar. Never the
    /// token, a request body (passwords) or a query string. Printed even with
    /// --quiet, which silences everything else.
    #[arg(short, long)]
    pub verbose: bool,

    /// Also write the summary as JSON to this file, for runbooks and scripts
    ///
    /// Counts per status (zeros included), exit code, elapsed time, results
    /// path, server, and why the run stopped with the command that resumes it.
    /// Written whenever the summary is (also with --quiet), replaced
    /// atomically: a reader never sees half a file.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    /// Print a shell completion script or the man page to standard output, then exit
    // Not `exclusive`: clap would then refuse it whenever MATRIX_HOMESERVER is
    // set in the environment. Other flags are ignored; INPUT and -o refused.
    #[arg(long, value_name = "KIND", conflicts_with_all = ["input", "output"])]
    pub generate: Option<Generate>,
}

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    CompleteBash,
    CompleteZsh,
    CompleteFish,
    Man,
}
