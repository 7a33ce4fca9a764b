//! Command-line definition: what the admin types. Values are parsed here and
//! validated in `config`; nothing in this module touches the network or files.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_LONG_HELP: &str = "\
EXAMPLES:
  Check first, change nothing:
    export MATRIX_ADMIN_TOKEN=syt_...
    matrix-reactivate -H https://matrix.example.org users.csv -o check.csv --dry-run

  Reactivate, with a new password per user, 2 users a second:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv --rate 2

  As fast as the server bears while its other users barely notice (the
  server's answers at most twice as slow as idle, at most 8 users at once):
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \
        --rate auto --concurrency 8

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

  Give back DMs, settings, push rules and key backups from last night's
  database backup (or a PostgreSQL database the dump was restored into, or a
  `matrix-reactivate snapshot` file):
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \
        --restore-from /backups/homeserver.db
    PGPASSWORD=... matrix-reactivate -H https://matrix.example.org users.csv \
        -o results.csv --restore-from postgresql://synapse@db/synapse_restored
  Passwords sealed to the help desk's age key, never in clear on this machine:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \
        --encrypt-to age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    (the help desk: matrix-reactivate decrypt results.csv -i key.txt -o clear.csv)

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
  failed. Rows are written as each user finishes. With --encrypt-to, the
  password column holds each password sealed with age (base64 of the binary
  format), and so does the journal: open them with `matrix-reactivate decrypt`
  or with any age: printf %s \"$FIELD\" | base64 -d | age -d -i key.txt

EXIT CODES:
  0    every user was reactivated, already active, or would be (--dry-run)
  1    fatal error: bad token, not an admin, unreachable server, unreadable
       input, results file exists, the server refused the token mid-run or
       stayed unreachable longer than --max-outage, ...
  2    usage error (a bad flag value or recipient, a --resume that would
       seal passwords otherwise than the interrupted run did)
  3    the run finished but some rows need attention (invalid, not_local,
       not_found, erased, failed, or a reactivated user whose rooms or
       profile were not all given back)
  130  interrupted (Ctrl-C or SIGTERM); run again with --resume to finish

WHO TO REACTIVATE:
  `matrix-reactivate find` lists the server's deactivated users, with when and
  from which rooms their deactivation made them leave, in a file this command
  takes as INPUT (see matrix-reactivate find --help).";

/// Bulk-reactivate deactivated Matrix accounts on a Synapse homeserver.
///
/// Checks every user first (an unknown ID is never created), reactivates the
/// deactivated ones through the Synapse Admin API at a steady pace, and writes
/// each user's new password and status to a results CSV as it goes.
// The top-level arguments are the reactivation itself and `find` is a
// subcommand beside them, so `matrix-reactivate INPUT -o OUT` works as it
// always did (an input file named `find` is given as `./find`). There is no
// `help` subcommand, so an input file named `help` still works.
#[derive(Debug, Parser)]
#[command(
    name = "matrix-reactivate",
    version,
    after_long_help = AFTER_LONG_HELP,
    // INPUT and -o are optional to clap only for --generate and find; -H is
    // checked in `config` (a flag shared with find cannot name --generate).
    override_usage = "matrix-reactivate [OPTIONS] -H <URL> -o <PATH> <INPUT>\n       \
                      matrix-reactivate find [OPTIONS] -H <URL> -o <PATH>\n       \
                      matrix-reactivate snapshot [OPTIONS] -H <URL> -o <PATH> [INPUT]\n       \
                      matrix-reactivate decrypt <RESULTS> -i <IDENTITY> [-o <PATH>]\n       \
                      matrix-reactivate --generate <KIND>",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// CSV of users to reactivate, or - for standard input
    #[arg(value_name = "INPUT", required_unless_present = "generate")]
    pub input: Option<PathBuf>,

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

    /// Reactivations per second (decimals allowed, 0 for no limit), or auto: as fast as the server bears
    #[arg(long, default_value = "5", value_name = "PER_SECOND|auto")]
    pub rate: String,

    /// With --rate auto: how much slower than idle the server may answer its other users [default: 2]
    #[arg(long, value_name = "FACTOR")]
    pub max_slowdown: Option<f64>,

    /// With --rate auto: reactivations per second at most [default: no cap]
    #[arg(long, value_name = "PER_SECOND")]
    pub max_rate: Option<f64>,

    /// Reactivations allowed at once before the rate applies
    #[arg(long, default_value = "1", value_name = "N")]
    pub burst: u32,

    /// Users in flight at most (with --rate auto, the ceiling)
    #[arg(long, default_value = "4", value_name = "N")]
    pub concurrency: usize,

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

    /// Give back what deactivation deleted, from a snapshot file, a Synapse SQLite
    /// database backup, or postgresql://USER@HOST[:PORT]/DBNAME
    ///
    /// After each reactivation: e-mail addresses and phone numbers, display name
    /// and avatar, the rooms the user was in, account data (DMs, ignore list, room
    /// tags, recovery setup, settings), push rules, and the newest key backup, as
    /// far as the account lacks them now (nothing it has is replaced). Databases
    /// are opened read-only; PostgreSQL's password comes from PGPASSWORD or
    /// ~/.pgpass, never from the URL.
    #[arg(long, value_name = "SOURCE")]
    pub restore_from: Option<String>,

    /// Also write the summary as JSON to this file, for runbooks and scripts
    ///
    /// Counts per status (zeros included), exit code, elapsed time, results
    /// path, server, and why the run stopped with the command that resumes it.
    /// Written whenever the summary is (also with --quiet), replaced
    /// atomically: a reader never sees half a file.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    #[command(flatten, next_help_heading = "Sealing passwords")]
    pub seal: SealArgs,

    /// Print a shell completion script or the man page to standard output, then exit
    // Not `exclusive`: clap would then refuse it whenever MATRIX_HOMESERVER is
    // set in the environment. Other flags are ignored; INPUT and -o refused.
    #[arg(long, value_name = "KIND", conflicts_with_all = ["input", "output"])]
    pub generate: Option<Generate>,

    #[command(flatten)]
    pub console: ConsoleArgs,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
}

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    CompleteBash,
    CompleteZsh,
    CompleteFish,
    Man,
}

/// Where the server is and how to talk to it: the same for every command.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Client-server API base URL of the homeserver, e.g. https://matrix.example.org
    #[arg(short = 'H', long, env = "MATRIX_HOMESERVER", value_name = "URL")]
    pub homeserver: Option<String>,

    /// Read the admin access token from this file (default: env MATRIX_ADMIN_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

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
    /// Past SECONDS the run stops with exit code 1 (a reactivation run is
    /// saved for --resume). 0 stops at the first request that cannot reach
    /// the server.
    ///
    /// This replaces --max-consecutive-failures, which counted requests and so
    /// stopped a run within seconds of a restart; that flag is still accepted
    /// (old runbooks keep working) and ignored, with a warning.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub max_outage: f64,

    /// Replaced by --max-outage; accepted and ignored, with a warning
    #[arg(long, hide = true, value_name = "N")]
    pub max_consecutive_failures: Option<u32>,

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
}

/// What the tool prints on stderr while it works: the same for every command.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Find(FindArgs),
    Snapshot(SnapshotArgs),
    Decrypt(DecryptArgs),
}

const FIND_AFTER_LONG_HELP: &str = "\
EXAMPLES:
  Find who to restore, review the list, then restore them and their rooms:
    export MATRIX_ADMIN_TOKEN=syt_...
    matrix-reactivate find -H https://matrix.example.org -o users.csv \\
        --left-since 2026-11-26T01:00:00Z --left-until 2026-11-26T03:00:00Z
    (review users.csv: delete the lines of anyone who should stay deactivated)
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \\
        --rooms-column rooms

  Everyone the server holds deactivated, whenever it happened:
    matrix-reactivate find -H https://matrix.example.org -o all.csv

  A server whose logins belong to MAS (found by itself), as for the main command:
    export MATRIX_ADMIN_TOKEN=mct_... MAS_CLIENT_ID=... MAS_CLIENT_SECRET=...
    matrix-reactivate find -H https://matrix.example.org -o users.csv

OUTPUT:
  A CSV created with mode 0600 (refused if it exists), one row per user, sorted
  by user ID, with the header user_id,deactivated_at,erased,rooms:
  deactivated_at  when the user was deactivated, RFC 3339 UTC to the ms.
                  Synapse does not record it: it is the time of the user's
                  latest own leave (deactivation makes the user leave every
                  room). Empty for a user who was in no room. On a server
                  whose logins belong to MAS: MAS's deactivated_at, exact.
  erased          true for a GDPR-erased user (the main command leaves them
                  alone unless --include-erased)
  rooms           the rooms to give back, room IDs separated by ; (sorted).
                  With --left-since: the rooms the user left on their own at
                  or after it, as --rejoin-rooms counts them. Without it: the
                  burst of own leaves that ends at deactivated_at, that is the
                  latest own leave and each earlier one that came less than
                  60 s before the next (deactivation leaves every room in one
                  such burst). Rooms the user was kicked or banned from, or
                  had left of their own accord before the burst, are not
                  listed.
  The main command takes the file as it is: with --rooms-column rooms it joins
  each reactivated user to their rooms again.

MAS:
  On a server that delegates its logins to Matrix Authentication Service, find
  needs MAS's admin credentials, as the main command does. It lists the users
  MAS holds deactivated (whose deactivated_at is exact) and those Synapse holds
  deactivated (one side can miss a deactivation the other made: a deactivation
  through Synapse's own admin API never reaches MAS), each once. erased and the
  rooms come from Synapse, as on any server. MAS lists by creation, not by
  name: its list is read whole and sorted first (about 10 MB for 100,000
  users).

WINDOW:
  --left-since and --left-until keep the users whose deactivated_at is at or
  after --left-since and before --left-until. A user who was in no room has no
  time to compare: with a window such users are left out, and the summary
  counts them (run without the window to list them). Synapse parts users from
  their rooms in the background, one user after another: after a bulk
  deactivation the last leaves can come well after the deactivation calls, so
  leave --left-until generous.

REQUESTS:
  GET only, paced by --rate: the preflight, the list of deactivated users
  (GET /_synapse/admin/v3/users, in pages of --page-size, by user ID), each
  user's rooms (GET /_synapse/admin/v1/users/{id}/memberships, Synapse 1.145
  or later) and the member state of each room they left, read once per room
  however many users shared it. On a MAS server, also MAS's list
  (GET /api/admin/v1/users?filter[status]=deactivated, in pages of
  --page-size) and, for a user only MAS holds deactivated, the user in
  Synapse (GET /_synapse/admin/v2/users/{id}, for erased).

EXIT CODES:
  0    the list is complete
  1    fatal error: bad token, not an admin, unreachable server, the output
       file exists, ... (no output file is left behind)
  2    usage error
  3    the list is written, but some users' rooms could not be read: they
       are not in it, and the summary names them
  130  interrupted (Ctrl-C or SIGTERM); no output file is left behind";

/// List the server's deactivated users, with when and from which rooms their
/// deactivation made them leave.
///
/// Read-only: sends GET requests only. Writes a CSV that the main command
/// takes as its input: review it, then run
/// `matrix-reactivate FILE -o results.csv --rooms-column rooms`.
#[derive(Debug, Args)]
#[command(
    after_long_help = FIND_AFTER_LONG_HELP,
    override_usage = "matrix-reactivate find [OPTIONS] -H <URL> -o <PATH>"
)]
pub struct FindArgs {
    /// CSV to create (mode 0600): user_id,deactivated_at,erased,rooms; refused if it exists
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// Only users deactivated at or after TIME, and only rooms left at or after it: RFC 3339 (2026-11-26T01:00:00Z) or Unix time in ms
    #[arg(long, value_name = "TIME")]
    pub left_since: Option<String>,

    /// Only users deactivated before TIME: RFC 3339 or Unix time in ms
    #[arg(long, value_name = "TIME")]
    pub left_until: Option<String>,

    /// Requests per second; decimals allowed, 0 for no limit
    #[arg(long, default_value = "20", value_name = "PER_SECOND")]
    pub rate: f64,

    /// Requests in flight at most
    #[arg(long, default_value = "4", value_name = "N")]
    pub concurrency: usize,

    /// Users per list request (1 to 10000)
    #[arg(long, default_value = "500", value_name = "N")]
    pub page_size: u32,

    #[command(flatten)]
    pub console: ConsoleArgs,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
}

const SNAPSHOT_AFTER_LONG_HELP: &str = "\
EXAMPLES:
  Before a risky change (a migration, an LDAP sync, a cleanup script), keep
  what a deactivation would delete, for everyone:
    export MATRIX_ADMIN_TOKEN=syt_...
    matrix-reactivate snapshot -H https://matrix.example.org -o before.snap

  Only the users of a CSV (same input rules as the main command):
    matrix-reactivate snapshot -H https://matrix.example.org staff.csv -o staff.snap

  After the change deactivated some of them by mistake:
    matrix-reactivate -H https://matrix.example.org users.csv -o results.csv \\
        --restore-from before.snap

WHAT IT READS, PER USER:
  e-mail addresses and phone numbers (MAS's e-mails on a server whose logins
  belong to MAS), display name and avatar, the rooms the user is joined to,
  every item of account data (DMs, ignore list, room tags, recovery setup,
  settings), and, acting as the user for a few minutes (a token that expires
  by itself and is ended as soon as the user is read; the admin's own account
  is read with the admin's token): push rules and the newest key backup with
  every session in it, encrypted as the user's client made it.

OUTPUT:
  A SQLite file created with mode 0600, never over an existing file; it is
  written under a hidden temporary name beside it and appears only once
  complete. A snapshot that did not finish (an error, Ctrl-C) leaves no file.
  It holds the users' e-mail addresses and encrypted key backups: keep it as
  private as a database backup.

REQUESTS:
  Paced by --rate (requests per second), at most --concurrency users at once,
  retried like every request of the tool. Nothing on the server changes but
  the short-lived tokens to act as each user.

EXIT CODES:
  0    every user was read and written
  1    fatal error: bad token, not an admin, unreachable server, the output
       file exists, ... (no file is left behind)
  2    usage error
  3    the file is written, but some users are not in it (not found,
       deactivated, not of this server, or could not be read): the summary
       names them
  130  interrupted (Ctrl-C or SIGTERM); no file is left behind";

/// Keep what a deactivation would delete, for the users of INPUT (or every
/// active local user), in a file `--restore-from` reads.
///
/// Reads e-mails, profile, rooms, account data, push rules and key backups
/// from the live server into one private SQLite file. For a server where the
/// admin has the API but no database backup.
#[derive(Debug, Args)]
#[command(
    after_long_help = SNAPSHOT_AFTER_LONG_HELP,
    override_usage = "matrix-reactivate snapshot [OPTIONS] -H <URL> -o <PATH> [INPUT]"
)]
pub struct SnapshotArgs {
    /// CSV of users to read, or - for standard input [default: every active local user]
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,

    /// Snapshot file to create (SQLite, mode 0600); refused if it exists
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// Column holding the users [default: user_id, mxid, user or localpart, else the only column]
    #[arg(long, value_name = "NAME", requires = "input")]
    pub column: Option<String>,

    /// Server name for bare localparts and for telling local users apart [default: the token user's]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Requests per second; decimals allowed, 0 for no limit
    #[arg(long, default_value = "20", value_name = "PER_SECOND")]
    pub rate: f64,

    /// Users read at once
    #[arg(long, default_value = "4", value_name = "N")]
    pub concurrency: usize,

    #[command(flatten)]
    pub console: ConsoleArgs,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
}

/// `--encrypt-to`, `--encrypt-to-file`: sealing passwords to the help desk.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// Seal every password to this age recipient (age1…, or an ssh-ed25519 / ssh-rsa public key); repeatable
    ///
    /// Each password is encrypted with age to every recipient given, before it
    /// is written anywhere: the results' password column and the journal hold
    /// the sealed text (base64 of age's binary format, one line) and never the
    /// password. The tool needs no private key. The help desk opens them with
    /// `matrix-reactivate decrypt` or any age implementation.
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,

    /// Seal every password to the recipients in this file (one per line, # comments, as age -R reads); repeatable
    #[arg(long, value_name = "PATH")]
    pub encrypt_to_file: Vec<PathBuf>,
}

const DECRYPT_AFTER_LONG_HELP: &str = "\
EXAMPLES:
  The help desk opens the results of a run made with --encrypt-to:
    matrix-reactivate decrypt results.csv -i key.txt -o clear.csv
  With an SSH key, to standard output:
    matrix-reactivate decrypt results.csv -i ~/.ssh/id_ed25519 -o -
  One field with age itself:
    printf %s \"$FIELD\" | base64 -d | age -d -i key.txt

OUTPUT:
  The same CSV with each sealed password opened; every other field as it was.
  A file is created with mode 0600 and never overwrites one: it is written to
  a temporary file beside it, then put in place whole. If any field cannot be
  opened, no output is left and each such row is named.

EXIT CODES:
  0    every sealed password was opened
  1    a field could not be opened (its row and line are named), the results
       file is unreadable, or the output exists
  2    usage error: a missing or unreadable identity file, not an identity
  130  interrupted; no output is left";

/// Open the sealed passwords of a results file (`--encrypt-to`), for the help desk.
///
/// Writes the same CSV with clear passwords. Identity files as age reads them:
/// AGE-SECRET-KEY-1… lines (from age-keygen), or an unencrypted OpenSSH
/// private key.
#[derive(Debug, Args)]
#[command(
    after_long_help = DECRYPT_AFTER_LONG_HELP,
    override_usage = "matrix-reactivate decrypt <RESULTS> -i <IDENTITY> [-o <PATH>]"
)]
pub struct DecryptArgs {
    /// Results CSV of a run made with --encrypt-to
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,

    /// Identity file: age secret keys (AGE-SECRET-KEY-1…) or an unencrypted OpenSSH private key; repeatable
    #[arg(short, long = "identity", value_name = "IDENTITY", required = true)]
    pub identities: Vec<PathBuf>,

    /// CSV to create with the clear passwords (mode 0600, never overwritten); - for standard output [default: -]
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Print nothing but errors
    #[arg(short, long)]
    pub quiet: bool,
}
