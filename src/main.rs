//! The `dry-needling-cds` command: serve the CDS service, evaluate one hook request from a file, or check a
//! directory of guidance content.
//!
//! Only start-up concerns live here (arguments, configuration, telemetry, signals); everything else is in the
//! library so tests drive exactly what production runs.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dry_needling_cds::config::Config;
use dry_needling_cds::http::{
    Access, AddressNotice, ApiError, DEFAULT_BODY_LIMIT, MetricsExposure, ServeSettings, Storage, metrics_app,
};
use dry_needling_cds::service::{HookCall, HookError, find_service, handle_hook};
use dry_needling_cds::store::{CardLog, Store, StoreConfig, StoreSettings};
use dry_needling_cds::wire::Hook;
use dry_needling_cds::{AppState, ContentSource, Knowledge, app};
use time::Date;

#[derive(Parser)]
#[command(version, about = "CDS Hooks service for dry-needling orders")]
struct Cli {
    /// Directory of guidance content to use instead of the embedded `cards/`.
    #[arg(long, global = true, env = "DRY_NEEDLING_CDS_CARDS")]
    cards: Option<PathBuf>,
    /// Assess as if today were this date (YYYY-MM-DD); for reviewers and reproducible runs.
    #[arg(long, global = true, env = "DRY_NEEDLING_CDS_AS_OF", value_parser = parse_date)]
    as_of: Option<Date>,
    /// Configuration file (TOML): public URL, trusted clients, FHIR servers. See config/example.toml.
    #[arg(long, global = true, env = "DRY_NEEDLING_CDS_CONFIG")]
    config: Option<PathBuf>,
    /// A FHIR server origin (`http://127.0.0.1:8081`, `https://fhir.example.org`) any caller may name as
    /// `fhirServer`, with or without a token; repeatable. Adds to the configuration's `[fhir] open_servers`.
    /// Loopback servers are reached only when listed here or there.
    #[arg(long = "fhir-server", global = true, value_name = "ORIGIN")]
    fhir_servers: Vec<String>,
    /// Serving options, for the default command (they may also follow `serve`).
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CDS Hooks endpoints (the default command).
    Serve(ServeArgs),
    /// Print the response the service would give to a hook request (a file, or `-` for stdin).
    Evaluate {
        file: PathBuf,
        /// Service id to call; by default the one that handles the request's `hook`.
        #[arg(long)]
        service: Option<String>,
        /// `json`: the response as the EHR receives it; `text`: the cards as a clinician reads them.
        #[arg(long, value_enum, default_value = "json")]
        format: OutputFormat,
    },
    /// Check a directory of guidance content (card texts, services, suggested resources, value sets) and list
    /// every problem in it, with its file, field and what to change. Exit 0 when it is valid, 1 otherwise.
    /// Without DIR: `--cards` if given, else `cards` in the current directory, else the embedded content.
    CheckContent {
        /// The content directory, laid out as the project's `cards/`.
        dir: Option<PathBuf>,
    },
    /// Write the content as FHIR R4: one `ValueSet-<id>.json` per value set and one `PlanDefinition-<id>.json`
    /// per service, pretty-printed, into DIR (created when missing). Reads the content the service would (the
    /// embedded `cards/`, or `--cards DIR`). See docs/export.md.
    Export {
        /// The directory to write the resources to.
        #[arg(long, value_name = "DIR")]
        fhir: PathBuf,
    },
    /// Exit 0 if the service on this machine answers `GET /healthz` with 200 within 2 s, 1 otherwise (for a
    /// container's health check: a distroless image has no curl). Asks loopback at the port of `--listen`.
    Healthcheck {
        /// The URL to ask instead, such as `http://127.0.0.1:8080/readyz`.
        #[arg(long)]
        url: Option<String>,
        /// The service's listen address, whose port is asked on loopback.
        #[arg(long, env = "DRY_NEEDLING_CDS_LISTEN", value_parser = parse_listen)]
        listen: Option<SocketAddr>,
    },
}

/// The server's own options: not `global`, so that `evaluate --help` lists only what `evaluate` uses.
#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Address to listen on: an IP address or a host name (`localhost:8080`), with its port.
    #[arg(
        long,
        env = "DRY_NEEDLING_CDS_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = parse_listen
    )]
    listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "DRY_NEEDLING_CDS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Log format.
    #[arg(long, env = "DRY_NEEDLING_CDS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Accept unsigned requests on a non-loopback address. Only behind something else that authenticates.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Serve `GET /metrics` (and the health checks) on this separate address, and not on the main port.
    /// Without it, `/metrics` is on the main port for loopback peers only.
    #[arg(
        long,
        env = "DRY_NEEDLING_CDS_METRICS_LISTEN",
        value_name = "HOST:PORT",
        value_parser = parse_listen
    )]
    metrics_listen: Option<SocketAddr>,
    /// The URL EHRs call this service at (without `/cds-services`), replacing the configuration's
    /// `public_base_url`: tokens' `aud` is checked against it.
    #[arg(long, env = "DRY_NEEDLING_CDS_PUBLIC_BASE_URL", value_name = "URL")]
    public_base_url: Option<String>,
    /// Directory of the SQLite store (card log, feedback), created on first run; replaces `[store] data_dir`.
    /// [default: data]
    #[arg(long, env = "DRY_NEEDLING_CDS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Use PostgreSQL at this URL as the store (several instances), replacing `[store]`'s backend. Kept out of
    /// the configuration file, since it may hold a password.
    #[arg(
        long,
        env = "DRY_NEEDLING_CDS_POSTGRES_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    postgres_url: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_date(s: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format).map_err(|e| format!("expected YYYY-MM-DD: {e}"))
}

/// `HOST:PORT`, where the host may be a name (`localhost`): resolved now, the first address taken.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let hint = "write HOST:PORT, such as 127.0.0.1:8080, localhost:8080 or 0.0.0.0:8080 (every interface)";
    let mut resolved = text.to_socket_addrs().map_err(|e| format!("{e}: {hint}"))?;
    resolved
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address: {hint}"))
}

/// The allocator: jemalloc, whose per-thread caches take no lock where glibc's malloc waited on its arenas' locks
/// and spent a fifth of a large record's time (issue 26; measured in docs/PERFORMANCE.md, "Allocator"). Only the
/// binary's: the library's tests keep the system allocator (tests/memory.rs counts through its own).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: a background thread returns freed memory to the system within about
/// a second of quiet (`dirty_decay_ms`, `muzzy_decay_ms`), so that a burst of large records does not leave its
/// peak resident (what `malloc_trim` does for glibc's heap, which SQLite's C code still uses).
#[allow(unsafe_code)] // SAFETY: a NUL-terminated constant that jemalloc only reads, under the name it looks for.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Errors are the user's to fix (a busy port, a bad configuration): printed as `Error: …` with their causes,
/// never with a backtrace (which `anyhow` would add under `RUST_BACKTRACE=1`), and exit status 1.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    dry_needling_cds::http::memory::limit_arenas();
    let cli = Cli::parse();
    let serve_args = match &cli.command {
        Some(Command::Serve(args)) => args.clone(),
        _ => cli.serve.clone(),
    };
    // Before the content and the configuration are read: a health probe must fail only on the server's answer.
    if let Some(Command::Healthcheck { url, listen }) = &cli.command {
        healthcheck(url.as_deref(), listen.unwrap_or(serve_args.listen));
    }
    let source = match &cli.cards {
        Some(dir) => ContentSource::Directory(dir.clone()),
        None => ContentSource::Embedded,
    };
    if let Some(Command::CheckContent { dir }) = &cli.command {
        let dir = dir.clone().or_else(|| cli.cards.clone());
        return check_content(match dir {
            Some(dir) => ContentSource::Directory(dir),
            None if std::path::Path::new("cards").is_dir() => ContentSource::Directory(PathBuf::from("cards")),
            None => ContentSource::Embedded,
        });
    }
    let knowledge = Knowledge::load(&source).map_err(|error| {
        let context = match error.problems() {
            [] => format!("cannot read the guidance content in {}", source.describe()),
            _ => format!(
                "the guidance content in {} is invalid (`dry-needling-cds check-content {}` lists the same problems)",
                source.describe(),
                source.root().display()
            ),
        };
        anyhow::Error::new(error).context(context)
    })?;
    if let Some(Command::Export { fhir }) = &cli.command {
        return export_fhir(&knowledge, fhir);
    }
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config
        .add_open_servers(&cli.fhir_servers)
        .map_err(|e| anyhow::anyhow!("--fhir-server: {e}"))?;
    if let Some(url) = &serve_args.public_base_url {
        config
            .set_public_base_url(url)
            .map_err(|e| anyhow::anyhow!("--public-base-url: {e}"))?;
    }
    // The file and the flags together must say all that is required (`--public-base-url` stands in for the file's).
    config.check_complete().map_err(|e| match &cli.config {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => anyhow::anyhow!(e),
    })?;
    if let Some(dir) = &serve_args.data_dir {
        config.set_data_dir(dir);
    }
    if let Some(url) = &serve_args.postgres_url {
        config
            .set_postgres_url(url)
            .map_err(|e| anyhow::anyhow!("--postgres-url: {e}"))?;
    }
    // `evaluate` opens no store: only the server needs the URL.
    if let (Some(StoreConfig::Postgres { url }), Some(Command::Serve(_)) | None) = (&config.store.backend, &cli.command)
        && url.is_empty()
    {
        anyhow::bail!(
            "[store] backend = \"postgres\" needs a URL: postgres_url in [store], --postgres-url or \
             DRY_NEEDLING_CDS_POSTGRES_URL"
        );
    }
    let serve_settings = config.serve;
    let store_settings = config.store.clone();
    // `evaluate` serves nobody, so the listen address does not decide whether it may run unsigned.
    let evaluating = matches!(cli.command, Some(Command::Evaluate { .. }));
    let state = AppState::configure(
        knowledge,
        config,
        serve_args.listen,
        serve_args.insecure_no_auth || evaluating,
    )?;
    let state = AppState {
        today: cli.as_of,
        body_limit: serve_args.body_limit,
        ..state
    };
    match cli.command {
        Some(Command::Evaluate { file, service, format }) => evaluate(state, &file, service, format),
        Some(Command::Serve(_)) | None => serve(state, serve_args, serve_settings, store_settings),
        Some(Command::Healthcheck { .. } | Command::CheckContent { .. } | Command::Export { .. }) => {
            unreachable!("answered before loading anything")
        }
    }
}

fn init_telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // fhir-sdk logs request URLs (which carry patient ids) at info: never let it.
        .add_directive("fhir_sdk=warn".parse().expect("a valid directive"));
    // Colour codes only on a terminal: in a file or a log collector they are noise (and `NO_COLOR` is honoured).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        // One flat object per line: the event's fields at the top level, the request's span as `span`
        // (docs/operations.md, "JSON log fields", lists every field).
        LogFormat::Json => builder.json().flatten_event(true).with_span_list(false).init(),
    }
}

fn serve(state: AppState, args: ServeArgs, settings: ServeSettings, store: StoreSettings) -> anyhow::Result<()> {
    init_telemetry(args.log_format);
    let metrics = dry_needling_cds::ops::metrics::install(&state.knowledge.version.label)
        .context("cannot install the metrics recorder")?;
    tracing::info!(
        content_version = %state.knowledge.version.label,
        declared = %state.knowledge.version.declared,
        "guidance content loaded"
    );
    let state = AppState {
        metrics: Some(metrics),
        metrics_exposure: match args.metrics_listen {
            Some(_) => MetricsExposure::SeparateListener,
            None => MetricsExposure::LoopbackOnly,
        },
        ..state
    };
    match state.access.as_ref() {
        Access::Verify(verifier) => {
            let issuers: Vec<&str> = verifier.issuers().collect();
            tracing::info!(?issuers, "requests must carry a JWT from a trusted client");
        }
        Access::Open if args.listen.ip().is_loopback() => tracing::warn!(
            "no trusted clients configured: accepting unsigned requests, because only this machine can reach {}",
            args.listen
        ),
        Access::Open => tracing::warn!(
            "--insecure-no-auth: accepting unsigned requests from anyone who can reach {}",
            args.listen
        ),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served: anyhow::Result<()> = runtime.block_on(async move {
        let (state, card_log_writer) = open_store(state, &store).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        // Only now, with the port ours: another process of the same instance cannot be running.
        if let Some(storage) = &state.storage {
            report_unclean_runs(&storage.store, &instance_name(args.listen)).await;
        }
        match AddressNotice::new(address, state.access.as_ref()) {
            AddressNotice::Info(line) => {
                tracing::info!(%address, max_connections = settings.max_connections, "{line}")
            }
            AddressNotice::Warn(line) => {
                tracing::warn!(%address, max_connections = settings.max_connections, "{line}")
            }
        }
        // A testing aid switched on where EHRs are trusted: said at every start, so that it is never left on unseen.
        if state.sandbox_companion == dry_needling_cds::companion::SandboxCompanion::On
            && matches!(state.access.as_ref(), Access::Verify(_))
        {
            tracing::warn!(
                "the sandbox companion (dry-needling-sandbox-companion, a testing aid for the CDS Hooks sandbox) is \
                 on: [sandbox_companion] enabled; never for production EHRs"
            );
        }
        if let Access::Verify(verifier) = state.access.as_ref() {
            let tenants: Vec<&str> = verifier
                .tenants()
                .filter(|t| t.sandbox_companion == Some(true))
                .map(|t| t.id.as_str())
                .collect();
            if !tenants.is_empty() {
                tracing::warn!(
                    tenants = %tenants.join(", "),
                    "the sandbox companion (a testing aid for the CDS Hooks sandbox) is on for these tenants: \
                     [[client.tenants]] sandbox_companion = true; never for production EHRs"
                );
            }
        }
        // One signal stops both listeners.
        let (stop, stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let metrics_server = match args.metrics_listen {
            Some(metrics_address) => {
                let listener = tokio::net::TcpListener::bind(metrics_address)
                    .await
                    .with_context(|| format!("cannot listen on {metrics_address} (--metrics-listen)"))?;
                let metrics_address = listener.local_addr()?;
                tracing::info!(%metrics_address, "serving metrics at http://{metrics_address}/metrics");
                let metrics_settings = ServeSettings {
                    max_connections: 64,
                    max_connections_per_peer: dry_needling_cds::http::default_share(64),
                    ..settings
                };
                let app = metrics_app(state.clone());
                Some(tokio::spawn(dry_needling_cds::http::serve(
                    listener,
                    app,
                    metrics_settings,
                    stopped(stopping.clone()),
                )))
            }
            None => None,
        };
        let storage = state.storage.clone();
        dry_needling_cds::http::serve(listener, app(state), settings, stopped(stopping)).await?;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        if let (Some(storage), Some(writer)) = (storage, card_log_writer) {
            writer.finish(CARD_LOG_FLUSH_DEADLINE).await;
            if let Err(error) = storage.store.end_run(time::OffsetDateTime::now_utc()).await {
                tracing::warn!(%error, "could not record the clean shutdown: the next start will report this run");
            }
            storage.store.close().await;
        }
        Ok(())
    });
    // Work still on the blocking pool (a large request whose connection was closed at the deadline) is not
    // waited for beyond this.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("stopped");
    served
}

/// This service's name for its runs in the store: the host name and the configured listen port, which stay the
/// same when the same service restarts (a container restarted in its pod, a systemd unit) and differ between
/// instances on one host.
fn instance_name(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", listen.port())
}

/// Records this run in the store and reports the earlier runs of this instance that ended without a clean
/// shutdown (`kill -9`, a crash): a warning each, with what can be known of what they lost, and
/// `cds_unclean_stops_total`. A store that cannot be written is reported by `/readyz`, not here.
async fn report_unclean_runs(store: &Store, instance: &str) {
    let now = time::OffsetDateTime::now_utc();
    let unclean = match store.begin_run(instance, now).await {
        Ok(unclean) => unclean,
        Err(error) => {
            tracing::warn!(%error, "could not record this run in the store");
            return;
        }
    };
    for run in &unclean {
        metrics::counter!(dry_needling_cds::ops::metrics::UNCLEAN_STOPS).increment(1);
        let format = time::format_description::well_known::Rfc3339;
        let last_write = run.last_write_at.and_then(|t| t.format(&format).ok());
        tracing::warn!(
            started_at = run.started_at.format(&format).unwrap_or_default(),
            last_card_log_write = last_write.as_deref().unwrap_or("none"),
            cards_written = run.cards_written,
            "the previous run of this instance ended without a clean shutdown (kill -9, a crash, the power): the \
             cards it answered after its last card-log write (at most 100 ms of answers, at most the queue's \
             capacity) are not in the card log, and analytics undercount them"
        );
    }
}

/// How long shutdown waits for the card log's queue to be written.
const CARD_LOG_FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the store (applying migrations), starts the card log's writer and the retention task, and shares the
/// `jti` cache when the store is PostgreSQL and tokens are verified. A store that cannot be opened stops the
/// start, with its path or host in the message.
async fn open_store(
    state: AppState,
    settings: &StoreSettings,
) -> anyhow::Result<(AppState, Option<dry_needling_cds::store::CardLogWriter>)> {
    let Some(config) = &settings.backend else {
        tracing::info!("store off: cards and feedback are only logged, analytics are not served");
        return Ok((state, None));
    };
    let store = Store::open(config)
        .await
        .context("cannot open the store ([store], --data-dir)")?;
    let shared = store.backend() == "postgres";
    let mut replay_shared = false;
    if let (true, Access::Verify(verifier)) = (shared, state.access.as_ref()) {
        verifier.share_replay_cache(store.clone());
        replay_shared = true;
    }
    tracing::info!(
        store = %store.describe(),
        schema_version = dry_needling_cds::store::SCHEMA_VERSION,
        retention_days = settings.retention_days,
        replay_shared,
        "store ready: card log, feedback and analytics"
    );
    let (card_log, writer) = CardLog::start(store.clone(), settings.queue_capacity);
    tokio::spawn(dry_needling_cds::store::maintain(
        store.clone(),
        settings.retention_days,
        replay_shared,
    ));
    let storage = Storage {
        store,
        card_log,
        keep_override_comments: settings.keep_override_comments,
    };
    Ok((
        AppState {
            storage: Some(storage),
            ..state
        },
        Some(writer),
    ))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in progress");
}

/// Runs one hook request through the same path as the server (including FHIR fetches, under the same
/// allowlist), without authentication: the file is trusted input.
fn evaluate(state: AppState, file: &PathBuf, service: Option<String>, format: OutputFormat) -> anyhow::Result<()> {
    let knowledge = &state.knowledge;
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    let service = match service {
        Some(id) => id,
        None => {
            let hook = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("hook").and_then(|h| h.as_str()).map(str::to_string))
                .unwrap_or_default();
            knowledge
                .services
                .iter()
                .find(|s| Some(s.hook) == Hook::parse(&hook))
                .map(|s| s.id.clone())
                .unwrap_or(hook)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = match find_service(knowledge, &service) {
        Some(service) => {
            let call = HookCall {
                service,
                body: &body,
                today: state.today.unwrap_or_else(|| time::OffsetDateTime::now_utc().date()),
                caller: None,
                limits: &state.limits,
                missing_data: &state.missing_data,
            };
            runtime.block_on(handle_hook(knowledge, &state.fetcher, call))
        }
        None => Err(HookError::UnknownService),
    };
    let (status, body) = match result {
        Ok((response, _)) if format == OutputFormat::Text => {
            print!("{}", dry_needling_cds::cardtext::cards_text(&response.cards));
            return Ok(());
        }
        Ok((response, _)) => (200, serde_json::to_value(response)?),
        Err(e) => {
            let (status, body) = ApiError::from(e).to_parts();
            (status.as_u16(), body)
        }
    };
    if format == OutputFormat::Text {
        // No cards: what the EHR would be told instead, in the OperationOutcome's words.
        let issues = body["issue"].as_array().map(Vec::as_slice).unwrap_or_default();
        println!("No cards: the service would answer HTTP {status}.");
        for issue in issues {
            println!("  {}", issue["diagnostics"].as_str().unwrap_or("(no diagnostics)"));
        }
    } else {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 200 {
        eprintln!("HTTP status would be {status}");
        std::process::exit(1);
    }
    Ok(())
}

/// `check-content`: every problem, one a line on stdout, and exit 1; or a one-line summary and exit 0.
fn check_content(source: ContentSource) -> anyhow::Result<()> {
    match Knowledge::load(&source) {
        Ok(knowledge) => {
            let n = knowledge.counts();
            println!(
                "{}: the content is valid: {} cards (summaries within {} characters), {} services, {} suggested \
                 resources, {} codes in {} value sets, {} phrase sets; content version {}",
                source.describe(),
                n.cards,
                dry_needling_cds::content::SUMMARY_LIMIT,
                n.services,
                n.resources,
                n.codes,
                n.value_sets,
                n.phrase_sets,
                knowledge.version.label
            );
            Ok(())
        }
        Err(error) if !error.problems().is_empty() => {
            for problem in error.problems() {
                println!("{problem}");
            }
            let n = error.problems().len();
            eprintln!(
                "{n} problem{} in {}: fix {} and run check-content again",
                if n == 1 { "" } else { "s" },
                source.describe(),
                if n == 1 { "it" } else { "them" }
            );
            std::process::exit(1)
        }
        Err(error) => Err(error).with_context(|| format!("cannot check {}", source.describe())),
    }
}

/// `export --fhir DIR`: the content as FHIR resources, one file each; the paths written, one a line.
fn export_fhir(knowledge: &Knowledge, dir: &std::path::Path) -> anyhow::Result<()> {
    use dry_needling_cds::export::{FhirExport, ResourceType};
    let export = FhirExport::build(knowledge, time::OffsetDateTime::now_utc());
    let written = export
        .write_to(dir)
        .with_context(|| format!("cannot write the FHIR export to {}", dir.display()))?;
    for path in &written {
        println!("{}", path.display());
    }
    println!(
        "wrote {} ValueSets and {} PlanDefinitions to {} (canonical base {})",
        export.of(ResourceType::ValueSet).count(),
        export.of(ResourceType::PlanDefinition).count(),
        dir.display(),
        dry_needling_cds::export::CANONICAL_BASE
    );
    Ok(())
}

/// `healthcheck`: GETs `url`, or `/healthz` on loopback at the port the service listens on (an unspecified
/// address such as 0.0.0.0 or [::] is reached on loopback; any other, as given). Exits 0 on a 200 within 2 s,
/// otherwise 1 with one line on stderr. No proxy (HTTP_PROXY must not turn a local probe into a remote one) and
/// no redirect (200 from the address asked, nothing else).
fn healthcheck(url: Option<&str>, listen: SocketAddr) -> ! {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let url = url.map(str::to_string).unwrap_or_else(|| {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/healthz", SocketAddr::new(ip, listen.port()))
    });
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(2))
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?;
                Ok::<_, anyhow::Error>(client.get(&url).send().await?.status())
            })
        });
    match answer {
        Ok(status) if status == reqwest::StatusCode::OK => std::process::exit(0),
        Ok(status) => eprintln!("healthcheck: {url} answered {status}"),
        // `{:#}` writes the causes on the same line: "error sending request ...: tcp connect error: ...".
        Err(error) => eprintln!("healthcheck: {url}: {error:#}"),
    }
    std::process::exit(1)
}
