//! The command line: every setting is a flag or an environment variable (the flag wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "crier",
    version,
    about = "Incident communications on an append-only, hash-chained event store"
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "CRIER_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// The URL clients reach the server at (behind a proxy: the proxy's), for the absolute
    /// links of the feeds, the Statuspage API and the CloudEvents `source` of exports.
    /// Default: `serve` uses http:// and its listen address; `export` http://127.0.0.1:8080.
    #[arg(long, global = true, env = "CRIER_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; `serve` and `migrate` create the database when it is missing.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = eventstore::StoreConfig::DEFAULT_URL
    )]
    pub database_url: String,
    /// Most connections to PostgreSQL this process opens.
    #[arg(long, global = true, env = "CRIER_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// A history key file (`crier history keygen`, or `openssl rand -base64 32`), kept where
    /// the database never sees it: every event this process appends is authenticated with
    /// its first key, and `verify` reports an event without a valid authenticator at its
    /// position. Later lines hold older keys, still accepted when verifying.
    #[arg(long, global = true, env = "CRIER_HISTORY_KEY_FILE")]
    pub history_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (creates and migrates the database first).
    Serve(Box<ServeArgs>),
    /// Create the database if it is missing and apply the migrations, then exit. Run it as
    /// the database's owner; `serve` may then run as a role that owns nothing.
    Migrate(MigrateArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Rebuild every read model from the first event, then swap the result in. The live
    /// read models keep serving meanwhile; an interrupted replay resumes where it stopped.
    Replay(ReplayArgs),
    /// Recompute the hash chain of the whole history; exits 1 and names the first bad
    /// position when any stored byte was changed.
    Verify(VerifyArgs),
    /// Write the sealed history to standard output as NDJSON, one CloudEvent per line, in
    /// global order, up to the head sealed when it starts (constant memory).
    Export(ExportArgs),
    /// History keys, which authenticate every event appended (see `--history-key-file`).
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Signed checkpoints of the chain head (see `verify --checkpoint`).
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Also give this existing role exactly what `crier serve` needs: read and add to the
    /// history (never change, delete, truncate it or touch its triggers), read and write the
    /// other tables. Run again after every upgrade.
    #[arg(long)]
    pub app_role: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Start after this global position (0: from the first event).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Make a new history key of 32 random bytes: write it (base64, readable by its owner
    /// only) to FILE and print its key id. To rotate, put a new key on the first line of the
    /// file in use and keep the old ones below it.
    Keygen {
        /// Where to write the key; refused if the file exists.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Make a new Ed25519 signing key: write it (PKCS#8 PEM, readable by its owner only)
    /// to FILE and print its public key (base64 of the raw 32 bytes).
    Keygen {
        /// Where to write the private key; refused if the file exists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute the chain (from this key's previous checkpoint), sign its head, store the
    /// checkpoint (served at /v1/audit/checkpoint) and print it as JSON. Exits 1, signing
    /// nothing, when the chain does not verify.
    Sign {
        /// Ed25519 private key, PKCS#8 PEM (e.g. `openssl genpkey -algorithm ed25519`).
        #[arg(long, env = "CRIER_CHECKPOINT_KEY_FILE")]
        key: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Make sure an admin key with exactly this secret exists (idempotent), so that a fresh
    /// deployment can be driven by scripts. At least 32 characters, of 16 different ones, and
    /// 128 bits by the kinds of characters used: `openssl rand -base64 32` makes one.
    #[arg(long, env = "CRIER_BOOTSTRAP_ADMIN_KEY", hide_env_values = true)]
    pub bootstrap_admin_key: Option<String>,
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "CRIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Writes per second allowed to one API key, with a burst of twice that; 0: no limit.
    #[arg(long, env = "CRIER_WRITE_RATE_LIMIT", default_value_t = 50)]
    pub write_rate_limit: u32,
    /// Failed authentications per minute allowed from one client address; past it the
    /// address gets 429 until its budget refills. 0: no limit.
    #[arg(long, env = "CRIER_AUTH_FAILURE_LIMIT", default_value_t = 30)]
    pub auth_failure_limit: u32,
    /// Reads per second allowed from one client address, with a burst of twice that;
    /// 0 (the default): no limit (public reads are meant to be cached by a CDN).
    #[arg(long, env = "CRIER_READ_RATE_LIMIT", default_value_t = 0)]
    pub read_rate_limit: u32,
    /// `/v1/stream` connections one client address may hold open at once (429 past it);
    /// 0: no limit.
    #[arg(long, env = "CRIER_STREAM_PER_CLIENT_LIMIT", default_value_t = 1_000)]
    pub stream_per_client_limit: u32,
    /// `/v1/stream` connections this process holds open at once (503 with `Retry-After`
    /// past it). Default: its open-file limit less a tenth (at least 512) kept for
    /// everything else; `serve` first raises its soft open-file limit to the hard one.
    #[arg(long, env = "CRIER_STREAM_LIMIT")]
    pub stream_limit: Option<u32>,
    /// Addresses or CIDR blocks of the proxies in front of Crier, comma-separated. From
    /// those peers only, the client address (what per-address limits count) is the
    /// right-most hop of `Forwarded` (or `X-Forwarded-For`) that is not one of them; from
    /// anyone else those headers are ignored.
    #[arg(long, env = "CRIER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve `/metrics` on this address only (the main address then answers 404 there, and
    /// this one nothing else), e.g. one that only the monitoring network reaches.
    #[arg(long, env = "CRIER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Origins (`https://ops.example.org`, comma-separated) whose pages may send requests
    /// with a key from a browser. Public reads are open to every origin whatever this says.
    #[arg(long, env = "CRIER_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` only to `Authorization: Bearer <this token>`.
    #[arg(long, env = "CRIER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Largest request line plus headers, in bytes; larger requests get 431. (actix
    /// refuses any head over 128 KiB by itself.)
    #[arg(long, env = "CRIER_MAX_HEADER_BYTES", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1_024..=131_072))]
    pub max_header_bytes: u64,
    /// Seconds a request's body may take to arrive after its headers; slower ones get 408
    /// and the connection is closed.
    #[arg(long, env = "CRIER_BODY_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub body_timeout: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "CRIER_WORKERS")]
    pub workers: Option<usize>,
    /// Notices one `/v1/stream` subscriber may fall behind before it is closed (it then
    /// resumes from the log with `Last-Event-ID`).
    #[arg(long, env = "CRIER_STREAM_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub stream_buffer: u64,
    /// Seconds of silence after which a `/v1/stream` gets a comment that keeps it open.
    #[arg(long, env = "CRIER_STREAM_HEARTBEAT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stream_heartbeat: u64,
    /// The page's name in the Statuspage API and the feeds.
    #[arg(long, env = "CRIER_PAGE_NAME", default_value = "Service status")]
    pub page_name: String,
    /// The language notices are written in (a BCP 47 tag); translations add others, and
    /// readers get texts they lack in their language in this one.
    #[arg(long, env = "CRIER_DEFAULT_LANGUAGE", default_value = "en", value_parser = parse_language)]
    pub default_language: domain::language::Language,
    /// Milliseconds between the scheduler's looks at what is due (maintenances to start,
    /// complete or remind of): how late such a move may come.
    #[arg(long, env = "CRIER_SCHEDULER_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub scheduler_interval_ms: u64,
    /// Ed25519 private key (PKCS#8 PEM) to sign the chain head with: every
    /// `--checkpoint-interval` seconds, when the head has moved, the chain is recomputed
    /// from the previous checkpoint and the new head signed. Without it nothing is signed.
    #[arg(long, env = "CRIER_CHECKPOINT_KEY_FILE")]
    pub checkpoint_key: Option<PathBuf>,
    /// Seconds between checkpoints (with `--checkpoint-key`).
    #[arg(long, env = "CRIER_CHECKPOINT_INTERVAL", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval: u64,
    /// Let webhook URLs reach loopback, private and link-local addresses (tests, private
    /// networks). Refused by default (SSRF).
    #[arg(long, env = "CRIER_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// Seconds one webhook attempt may take before it counts as failed.
    #[arg(long, env = "CRIER_WEBHOOK_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout: u64,
    /// Milliseconds before the first retry of a failed delivery; each further retry waits
    /// twice as long (up to an hour), with jitter.
    #[arg(long, env = "CRIER_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_retry_base_ms: u64,
    /// Attempts before a delivery is given up as failed (18: about 8 hours of retries).
    #[arg(long, env = "CRIER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 18, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// The SMTP server email notices go through: `smtp://host:port`,
    /// `smtps://user:pass@host:465` or `smtp://…?tls=required`. Unset: no email (subscribing
    /// answers 503).
    #[arg(long, env = "CRIER_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// The `From` of every email, e.g. `NHS Wales Status <status@nhs.example>`.
    #[arg(long, env = "CRIER_EMAIL_FROM", default_value = "status@localhost")]
    pub email_from: String,
    /// A PEM file of certificates to trust for the SMTP server's TLS besides the web's
    /// roots: a relay with a certificate from a private CA.
    #[arg(long, env = "CRIER_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<std::path::PathBuf>,
    /// SMTP connections (messages in flight) at once in this process.
    #[arg(long, env = "CRIER_SMTP_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub smtp_connections: u32,
    /// Seconds one SMTP command may take.
    #[arg(long, env = "CRIER_SMTP_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub smtp_timeout: u64,
    /// Milliseconds before the first retry of an email the server deferred or could not
    /// take; each further retry waits twice as long (up to 10 minutes), with jitter.
    #[arg(long, env = "CRIER_EMAIL_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub email_retry_base_ms: u64,
    /// Email subscriptions per minute from one client address (0: no limit).
    #[arg(long, env = "CRIER_SUBSCRIBE_RATE_LIMIT", default_value_t = 10)]
    pub subscribe_rate_limit: u32,
    /// Confirmation emails per hour to one address (0: no limit); past it a request is
    /// answered alike and sends nothing.
    #[arg(long, env = "CRIER_CONFIRMATION_RATE_LIMIT", default_value_t = 3)]
    pub confirmation_rate_limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it as JSON, its secret (`key`) shown this once only.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Bind the key to one tenant: it then sees public notices and that tenant's only.
        #[arg(long)]
        tenant: Option<String>,
        /// What the key is for (shown in key lists).
        #[arg(long, default_value = "created with crier keys create")]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Publisher,
    Auditor,
    Reader,
}

impl From<RoleArg> for domain::api_key::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Self::Admin,
            RoleArg::Publisher => Self::Publisher,
            RoleArg::Auditor => Self::Auditor,
            RoleArg::Reader => Self::Reader,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Events folded per transaction (each one a resumable step).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// Start over even if an interrupted replay left a partial rebuild.
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print the report as JSON (the audit API's shape) instead of text.
    #[arg(long)]
    pub json: bool,
    /// A signed checkpoint kept earlier (the JSON of /v1/audit/checkpoint or `crier
    /// checkpoint sign`): also prove that today's history extends the one it signed.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The key the checkpoint must be signed by: base64 of its 32 bytes, or a PEM public
    /// key file. Without it, the key named in the checkpoint is printed for you to compare.
    #[arg(long, requires = "checkpoint")]
    pub public_key: Option<String>,
    /// Also fold the whole history into a scratch schema and compare every read model with
    /// it: exit 1 naming the first row that differs (one changed by hand, say). Needs the
    /// owner's privileges; writers wait while the tables are compared.
    #[arg(long)]
    pub read_models: bool,
}

/// A BCP 47 language tag, put in canonical form.
fn parse_language(text: &str) -> Result<domain::language::Language, String> {
    domain::language::Language::parse("--default-language", text)
        .map_err(|_| format!("{text} is not a BCP 47 language tag (such as en, cy or en-GB)"))
}

/// An address or a CIDR block: `10.0.0.0/8`, `192.0.2.7`, `fd00::/8`.
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text} is neither an address nor a CIDR block"))
}
