//! `omega serve`: runs the node. A first start without `--join` creates a
//! cluster of one (the home install); `--join ADDR --token T` admits the
//! node to an existing cluster. The node answers other members over QUIC
//! and local commands over its control socket until SIGINT or SIGTERM.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use omega_consensus::clock::{Clock, SystemClock};
use omega_consensus::command::{Command, Response};
use omega_consensus::model::{LibraryAccess, Role};
use omega_consensus::pki::{ClusterCa, NodeIdentity, TokenClaims};
use omega_consensus::quic::{self, QuicMember};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::control::{ControlRequest, ControlResponse, LINE_MAX_BYTES};

/// Longest join token lifetime.
const TOKEN_TTL_MAX_MS: u64 = 7 * 24 * 3_600_000;

/// `omega serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP listen address [default: 0.0.0.0:8420].
    #[arg(long, env = "OMEGA_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Raft-over-QUIC listen address [default: 0.0.0.0:8421].
    #[arg(long, env = "OMEGA_CLUSTER_LISTEN", value_name = "ADDR")]
    pub cluster_listen: Option<String>,
    /// P2P (QUIC, UDP) listen address [default: the cluster listen IP, any
    /// free port].
    #[arg(long, env = "OMEGA_P2P_LISTEN", value_name = "ADDR")]
    pub p2p_listen: Option<String>,
    /// Join the cluster of the member at ADDR (its cluster address), with
    /// a token from `--token-file`, `OMEGA_JOIN_TOKEN` or `--token`.
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
    /// A media folder to serve as a library: `PATH` (its type found from its
    /// content) or `PATH:TYPE` (movies, shows, music, audiobooks, books,
    /// photos). Repeatable; a folder already in a library is not added twice.
    #[arg(long = "media", value_name = "PATH[:TYPE]")]
    pub media: Vec<String>,
    /// Join token from `omega cluster token` on a member; `-` reads it from
    /// standard input. Prefer `OMEGA_JOIN_TOKEN` or `--token-file`: `ps`
    /// shows command lines to every local user.
    #[arg(long, env = "OMEGA_JOIN_TOKEN", value_name = "T", requires = "join")]
    pub token: Option<String>,
    /// A file holding the join token (e.g. a mounted secret).
    #[arg(
        long,
        env = "OMEGA_JOIN_TOKEN_FILE",
        value_name = "PATH",
        requires = "join",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
}

/// The largest join token file read (a token is a few hundred bytes).
const TOKEN_FILE_MAX_BYTES: u64 = 64 << 10;

/// The join token, from `--token-file`, `--token -` (standard input) or
/// `--token`/`OMEGA_JOIN_TOKEN`.
fn join_token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    use std::io::Read as _;
    let text = match (&args.token_file, args.token.as_deref()) {
        (Some(path), _) => {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(TOKEN_FILE_MAX_BYTES).read_to_string(&mut text))
                .with_context(|| format!("cannot read the join token from {}", path.display()))?;
            text
        }
        (None, Some("-")) => {
            let mut text = String::new();
            std::io::stdin()
                .take(TOKEN_FILE_MAX_BYTES)
                .read_to_string(&mut text)
                .context("cannot read the join token from standard input")?;
            text
        }
        (None, Some(token)) => token.to_owned(),
        (None, None) => return Ok(None),
    };
    let token = text.trim();
    if token.is_empty() {
        bail!("the join token is empty");
    }
    Ok(Some(token.to_owned()))
}

/// Where the node keeps its membership.
struct Paths {
    identity: PathBuf,
    join_pending: PathBuf,
    cluster_dir: PathBuf,
    socket: PathBuf,
}

impl Paths {
    fn of(config: &Config) -> Paths {
        let cluster_dir = config.cluster_dir();
        Paths {
            identity: cluster_dir.join("identity"),
            join_pending: cluster_dir.join("join-pending"),
            socket: config.control_socket(),
            cluster_dir,
        }
    }
}

/// Runs `omega serve`.
pub fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = global.config_with(crate::config::Overrides {
        cluster_listen: args.cluster_listen.clone(),
        listen: args.listen.clone(),
        p2p_listen: args.p2p_listen.clone(),
        ..global.overrides()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    match runtime.block_on(serve(config, args)) {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err(error) => match error.downcast_ref::<crate::departure::Departed>() {
            Some(departed) => {
                eprintln!("omega: error: {departed}");
                // The data directory is dead and its marker synced: the
                // process ends here, without tearing down the runtime and
                // RocksDB's static state at exit, which aborted the process
                // now and then ("pthread lock: Invalid argument", SIGABRT)
                // while a background thread still used a database.
                // SAFETY: `_exit` ends the process at once; nothing here
                // relies on a destructor running.
                unsafe { libc::_exit(i32::from(crate::departure::EXIT_DEPARTED)) }
            }
            None => Err(error),
        },
    }
}

fn parse_join_addr(text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .with_context(|| format!("--join: cannot resolve {text:?}"))?
        .next()
        .with_context(|| format!("--join: {text:?} has no address"))
}

/// The data directory holds the cluster CA's key, token keys, sealed
/// secrets and the catalog: it is made owner-only (0700), and so is every
/// file the node creates from now on (umask 077), RocksDB's and snapshots
/// included.
fn keep_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // SAFETY: umask only sets the process's file creation mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} owner-only", data_dir.display()))
}

/// The address other members dial for a bound one: itself, or with an
/// unspecified IP replaced by this host's outbound address.
fn advertised(bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    // Connecting a UDP socket sends nothing; it only picks the route.
    let outbound = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| socket.connect("192.0.2.1:9").map(|()| socket))
        .and_then(|socket| socket.local_addr());
    match outbound {
        Ok(local) => SocketAddr::new(local.ip(), bound.port()),
        Err(_) => {
            tracing::warn!("no route out of this host: advertising 127.0.0.1; set [cluster] advertise");
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
        }
    }
}

async fn serve(config: Config, args: ServeArgs) -> anyhow::Result<()> {
    let paths = Paths::of(&config);
    keep_private(&config.data_dir)?;
    std::fs::create_dir_all(&paths.cluster_dir)
        .with_context(|| format!("cannot create {}", paths.cluster_dir.display()))?;
    let existing = NodeIdentity::load(&paths.identity)?;
    let join = match (&existing, &args.join) {
        // A member ignores a leftover --join (a unit file or a compose
        // command written for the first start): its address need not
        // resolve, nor its token file exist, any longer. A token that names
        // another cluster is still refused, as that is a mistake.
        (Some(identity), Some(_)) => {
            if let Ok(Some(token)) = join_token(&args)
                && let Ok((claims, _, _)) = TokenClaims::parse_unverified(&token)
                && claims.cluster_id != identity.cluster.cluster_id
            {
                bail!(
                    "{} belongs to cluster {}, but the token is for cluster {}; use an empty --data-dir to join another cluster",
                    config.data_dir.display(),
                    identity.cluster.cluster_id_hex(),
                    hex::encode(claims.cluster_id)
                );
            }
            None
        }
        (None, Some(addr)) => match join_token(&args)? {
            Some(token) => Some((parse_join_addr(addr)?, token)),
            None => bail!("--join needs a token: --token-file PATH, OMEGA_JOIN_TOKEN or --token"),
        },
        (_, None) => None,
    };
    if let Some(identity) = &existing {
        if crate::departure::recorded(&paths.cluster_dir) {
            return Err(departed(identity.node_id, &config).into());
        }
        if args.join.is_some() {
            eprintln!("omega: note: this node is already a member; --join is ignored");
        }
    }
    let (identity, created) = match (existing, &join) {
        (Some(identity), _) => (identity, false),
        (None, Some((addr, token))) => {
            let identity = quic::join(*addr, token).await?;
            // The identity is durable before anything depends on it; the
            // pending marker makes a crash before promotion retry it.
            std::fs::write(&paths.join_pending, addr.to_string())
                .with_context(|| format!("cannot write {}", paths.join_pending.display()))?;
            identity.save(&paths.identity)?;
            (identity, false)
        }
        (None, None) => {
            let ca = ClusterCa::create()?;
            let identity = NodeIdentity {
                node_id: 1,
                node: ca.issue(1)?,
                cluster: ca,
            };
            identity.save(&paths.identity)?;
            (identity, true)
        }
    };
    // Before anything records a metric.
    crate::telemetry::handle();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let member = QuicMember::start(
        &identity,
        config.cluster.listen,
        &paths.cluster_dir,
        config.cluster.timing,
        clock.clone(),
    )
    .await?;
    // A node that applied its own removal before it stopped (or was
    // restored from a copy taken after it) is out of the cluster.
    let joining = paths.join_pending.exists();
    if !created && !joining && member.cluster.is_in_membership(identity.node_id) == Some(false) {
        crate::departure::record(&paths.cluster_dir, identity.node_id)?;
        return Err(departed(identity.node_id, &config).into());
    }
    let http_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (HTTP)", config.listen))?;
    let http_addr = advertised(http_listener.local_addr()?);
    // `[cluster] advertise` (an address or a host name), else the bound one.
    let advertise = config
        .cluster
        .advertise
        .clone()
        .unwrap_or_else(|| advertised(member.addr).to_string());
    let mut node = member.member_node(&identity, http_addr.to_string());
    node.cluster_addr = advertise.clone();
    let store = {
        let dir = config.store_dir();
        let settings = config.store.clone();
        tokio::task::spawn_blocking(move || omega_storage::Store::open(&dir, settings))
            .await?
            .with_context(|| format!("cannot open the store in {}", config.store_dir().display()))?
    };
    let store = Arc::new(store);
    let transcoder = if config.transcode.enabled {
        Some(
            crate::transcoder::Transcoder::start(
                &config.transcode,
                &config.data_dir.join("transcode"),
                Some(&config.data_dir.join("analysis")),
                Some(store.clone()),
            )
            .await?,
        )
    } else {
        None
    };
    let p2p = if config.p2p.enabled {
        Some(
            crate::p2p::start(
                &paths.cluster_dir.join("p2p-key"),
                &config.p2p,
                crate::relay::Relay::new(config.data_dir.join("relay"), config.p2p.cache_max),
                store.clone(),
                crate::p2p::member_reader(member.cluster.clone()),
            )
            .await?,
        )
    } else {
        None
    };
    // One list for the listener's per-address cap and the rate limits.
    let trusted_proxies: Arc<[ipnet::IpNet]> = config.http.trusted_proxies.clone().into();
    let app_state = crate::http::AppState {
        popularity: Arc::new(crate::gossip::Popularity::new(
            config.p2p.popular_after,
            config.p2p.replicas,
        )),
        job_wake: Arc::new(tokio::sync::Notify::new()),
        p2p: p2p.clone(),
        job_progress: Arc::new(crate::jobs::Progress::default()),
        transcoder,
        store: Some(store),
        events: crate::events::Events::default(),
        cluster: member.cluster.clone(),
        tokens: crate::tokens::TokenKey::derive(&identity.cluster.ca.key_der),
        clock: clock.clone(),
        limiter: Arc::new(crate::ratelimit::LoginLimiter::default()),
        passwords: Arc::new(crate::auth::PasswordCache::default()),
        scans: Arc::new(crate::api::libraries::Scans::default()),
        probe_media: config.probe_media,
        started: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        readiness: Arc::new(crate::readiness::Readiness::for_timing(&config.cluster.timing)),
        unattended_admin: std::env::var_os("OMEGA_ADMIN_USER").is_some()
            && std::env::var_os("OMEGA_ADMIN_PASSWORD").is_some(),
        trusted_proxies: trusted_proxies.clone(),
    };
    let state = app_state.clone();
    let app = crate::http::router(app_state);
    omega_transcode::budget::processes().set_max(config.transcode.max_processes);
    let open_files = crate::listener::raise_open_files_limit();
    let limits = crate::listener::Limits {
        header_timeout: config.http.header_timeout,
        connections_max: config
            .http
            .connections_max
            .unwrap_or_else(|| crate::listener::connections_for(open_files)),
        per_address_max: config.http.connections_per_address,
        trusted_proxies,
    };
    let http = tokio::spawn(crate::listener::serve(http_listener, app, limits));
    println!("omega: HTTP on {http_addr}");
    if created {
        member.cluster.initialize_single(node.clone()).await?;
        println!(
            "omega: created cluster {} as node 1 on {advertise}",
            identity.cluster.cluster_id_hex()
        );
    }
    if let Ok(via) = std::fs::read_to_string(&paths.join_pending) {
        let via: SocketAddr = via.trim().parse().context("corrupt join-pending marker")?;
        quic::become_member(&member.transport, via, identity.node_id, node.clone())
            .await
            .context("cannot become a voting member")?;
        std::fs::remove_file(&paths.join_pending)
            .with_context(|| format!("cannot remove {}", paths.join_pending.display()))?;
        println!(
            "omega: joined cluster {} as node {} on {advertise}",
            identity.cluster.cluster_id_hex(),
            identity.node_id
        );
    }
    if !created {
        tokio::spawn(crate::addresses::keep_recorded(
            member.cluster.clone(),
            identity.node_id,
            node.clone(),
        ));
    }
    create_admin_from_env(&member, clock.as_ref()).await?;
    add_media_libraries(&state, &args.media).await?;
    // Every library on this node is rescanned at start (incremental: items
    // are upserted by path, vanished files removed).
    for library in omega_consensus::state_machine::read::libraries(member.cluster.tables())? {
        if library.node == identity.node_id {
            crate::api::libraries::start_scan(&state, library).map_err(|error| anyhow::anyhow!("{error:?}"))?;
        }
    }
    if config.watch_media {
        tokio::spawn(watch_libraries(state.clone()));
    }
    tokio::spawn(rescan_returned_libraries(state.clone()));
    tokio::spawn(publish_cluster_changes(state.clone()));
    tokio::spawn(crate::api::sessions::purge_expired(state.clone()));
    tokio::spawn(crate::tokens::keep_signing_key(
        state.cluster.clone(),
        state.tokens.clone(),
    ));
    tokio::spawn(crate::readiness::watch(
        state.cluster.clone(),
        state.readiness.clone(),
        config.cluster.timing,
    ));
    if let Some(p2p) = p2p {
        println!(
            "omega: P2P as {} on {:?}",
            p2p.p2p.peer_id(),
            p2p.p2p
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        tokio::spawn(crate::p2p::keep_members(state.clone(), p2p, identity.node_id));
        tokio::spawn(crate::gossip::run(state.clone()));
    }
    if config.transcode.enabled && config.transcode.worker {
        tokio::spawn(crate::jobs::run(
            state.clone(),
            config.transcode.lease_ms,
            config.data_dir.join("jobs"),
        ));
    }
    let listener = bind_control_socket(&paths.socket)?;
    state.started.store(true, std::sync::atomic::Ordering::Release);
    println!(
        "omega: node {} serving; control socket {}",
        identity.node_id,
        paths.socket.display()
    );
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    let context = Arc::new(ControlContext {
        app: state.clone(),
        cluster_dir: paths.cluster_dir.clone(),
        store: state.store.clone().context("the node's store is not open")?,
        member,
        identity,
        clock,
        stop: stop_tx,
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut health = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut fatal = None;
    let mut membership = crate::departure::Watch::new(context.identity.node_id);
    let mut departed_now = false;
    loop {
        tokio::select! {
            _ = health.tick() => {
                if let Some(error) = context.member.cluster.fatal_error() {
                    fatal = Some(error);
                    break;
                }
                if membership.departed(&context.member) {
                    departed_now = true;
                    break;
                }
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let context = context.clone();
                    tokio::spawn(async move { answer(&context, stream).await });
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = stop_rx.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&paths.socket);
    http.abort();
    if let Some(error) = fatal {
        bail!("raft stopped: {error}");
    }
    if departed_now {
        crate::departure::record(&context.cluster_dir, context.identity.node_id)?;
        let _ = context.member.shutdown().await;
        return Err(departed(context.identity.node_id, &config).into());
    }
    context.member.shutdown().await?;
    Ok(())
}

fn departed(node: omega_consensus::model::NodeId, config: &Config) -> crate::departure::Departed {
    crate::departure::Departed {
        node,
        data_dir: config.data_dir.display().to_string(),
    }
}

/// Adds a library for each `--media PATH[:TYPE]` whose folder no library has.
async fn add_media_libraries(state: &crate::http::AppState, media: &[String]) -> anyhow::Result<()> {
    use crate::api::libraries::parse_kind;
    for spec in media {
        let (path, kind) = match spec.rsplit_once(':') {
            Some((path, kind)) if parse_kind(kind).is_some() => (path, parse_kind(kind)),
            _ => (spec.as_str(), None),
        };
        let path = std::path::absolute(path).with_context(|| format!("--media {spec}"))?;
        let text = path
            .to_str()
            .with_context(|| format!("--media {spec}: the path is not UTF-8"))?
            .to_owned();
        state
            .cluster
            .read_barrier(omega_consensus::Consistency::Linearizable)
            .await?;
        let libraries = omega_consensus::state_machine::read::libraries(state.cluster.tables())?;
        let known = libraries.iter().any(|library| library.paths.contains(&text));
        if !path.is_dir() {
            // One unmounted NAS must not take every library offline: the
            // node starts, and the scan marks the library offline (its
            // items are kept) until the folder is back.
            let consequence = if known {
                "its library is offline until it is back"
            } else {
                "no library is made for it until it is back"
            };
            eprintln!(
                "omega: warning: --media {spec}: {} is not a folder now; {consequence}",
                path.display()
            );
            continue;
        }
        if known {
            continue;
        }
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let folder = path.clone();
                tokio::task::spawn_blocking(move || crate::library::detect_kind(&folder))
                    .await?
                    .with_context(|| format!("--media {spec}: no media found to tell its type; give PATH:TYPE"))?
            }
        };
        let base = path
            .file_name()
            .map_or_else(|| "Media".to_owned(), |name| name.to_string_lossy().into_owned());
        let mut name = base.clone();
        for attempt in 2.. {
            if !libraries.iter().any(|library| library.name.eq_ignore_ascii_case(&name)) {
                break;
            }
            name = format!("{base} ({attempt})");
        }
        let command = Command::CreateLibrary {
            name: name.clone(),
            kind,
            paths: vec![text],
            node: state.cluster.id(),
            now_ms: state.clock.now_ms(),
        };
        match state.cluster.write(command).await? {
            Response::Created(id) => println!(
                "omega: library {id} {name:?} ({})",
                crate::api::libraries::kind_name(kind)
            ),
            other => bail!("--media {spec}: {other:?}"),
        }
    }
    Ok(())
}

/// Creates the first administrator from `OMEGA_ADMIN_USER` and
/// `OMEGA_ADMIN_PASSWORD` (unattended installs), unless that user exists.
async fn create_admin_from_env(member: &QuicMember, clock: &dyn Clock) -> anyhow::Result<()> {
    let (Ok(name), Ok(password)) = (std::env::var("OMEGA_ADMIN_USER"), std::env::var("OMEGA_ADMIN_PASSWORD")) else {
        return Ok(());
    };
    member
        .cluster
        .read_barrier(omega_consensus::Consistency::Linearizable)
        .await?;
    if omega_consensus::state_machine::read::user_by_name(member.cluster.tables(), &name)?.is_some() {
        return Ok(());
    }
    let password_hash = crate::auth::hash_password(&password)?;
    let command = Command::CreateUser {
        name: name.clone(),
        password_hash,
        roles: BTreeSet::from([Role::Admin, Role::Viewer]),
        library_access: LibraryAccess::All,
        now_ms: clock.now_ms(),
    };
    match member.cluster.write(command).await? {
        Response::Created(_) => {
            println!("omega: created administrator {name} from OMEGA_ADMIN_USER");
            Ok(())
        }
        // Another node created it meanwhile.
        Response::Rejected(omega_consensus::Rejection::NameTaken(_)) => Ok(()),
        other => bail!("cannot create the administrator: {other:?}"),
    }
}

/// Binds the control socket, replacing a stale one from a dead process; a
/// live one means another node runs on this data directory.
fn bind_control_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another omega node is running on {}",
            path.parent().unwrap_or(path).display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

struct ControlContext {
    app: crate::http::AppState,
    /// Where the departure marker goes when this node leaves.
    cluster_dir: PathBuf,
    member: QuicMember,
    store: Arc<omega_storage::Store>,
    identity: NodeIdentity,
    clock: Arc<dyn Clock>,
    stop: tokio::sync::mpsc::Sender<()>,
}

async fn answer(context: &ControlContext, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, LINE_MAX_BYTES));
    let response = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<ControlRequest>(&line) {
            Ok(request) => match handle(context, request).await {
                Ok(value) => ControlResponse::Ok(value),
                Err(error) => ControlResponse::Error(crate::cli::one_line(&error)),
            },
            Err(error) => ControlResponse::Error(format!("malformed request: {error}")),
        },
        Err(error) => ControlResponse::Error(format!("cannot read the request: {error}")),
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

async fn handle(context: &ControlContext, request: ControlRequest) -> anyhow::Result<serde_json::Value> {
    let cluster = &context.member.cluster;
    match request {
        ControlRequest::Status => Ok(serde_json::to_value(
            cluster.status_with_lag(std::time::Duration::from_secs(2)).await,
        )?),
        ControlRequest::Token { ttl_ms } => {
            if ttl_ms == 0 || ttl_ms > TOKEN_TTL_MAX_MS {
                bail!("a token lives between 1 ms and 7 days");
            }
            let expires_ms = context.clock.now_ms().saturating_add(ttl_ms);
            let token = context.identity.cluster.sign_token(rand::random(), expires_ms)?;
            Ok(serde_json::json!({ "token": token, "expires_ms": expires_ms }))
        }
        ControlRequest::Leave => {
            cluster.remove_member(context.identity.node_id).await?;
            crate::departure::record(&context.cluster_dir, context.identity.node_id)?;
            let _ = context.stop.try_send(());
            Ok(serde_json::json!({ "left": context.identity.node_id }))
        }
        ControlRequest::Remove { node } => {
            if !cluster.status().members.iter().any(|member| member.id == node) {
                bail!("node {node} is not a member");
            }
            cluster.remove_member(node).await?;
            Ok(serde_json::json!({ "removed": node }))
        }
        ControlRequest::Store { command } => {
            let store = context.store.clone();
            let output =
                tokio::task::spawn_blocking(move || crate::store_cmd::execute_for_client(&store, command)).await??;
            Ok(serde_json::to_value(output)?)
        }
        ControlRequest::Transcode { item, profile, chunks } => {
            let queued = match chunks {
                Some(chunks) => crate::api::jobs::enqueue_chunked(&context.app, item, &profile, chunks).await,
                None => crate::api::jobs::enqueue(&context.app, item, &profile).await,
            };
            let id = queued.map_err(|error| anyhow::anyhow!(error.message().to_owned()))?;
            job_json(&context.app, id)
        }
        ControlRequest::Job { id } => job_json(&context.app, id),
        ControlRequest::StoreBlobSize { blob } => {
            let blob: omega_storage::BlobId = blob.parse()?;
            Ok(serde_json::json!(context.store.blob(&blob)?.size))
        }
        ControlRequest::StoreRead { blob, start, end } => {
            let blob: omega_storage::BlobId = blob.parse()?;
            if end < start || end - start > 8 << 20 {
                bail!("reads are at most 8 MiB");
            }
            let store = context.store.clone();
            let bytes = tokio::task::spawn_blocking(move || store.read_range(&blob, start, end)).await??;
            Ok(serde_json::json!(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                bytes
            )))
        }
        ControlRequest::UserAdd { name, password, admin } => {
            let password_hash = crate::auth::hash_password(&password)?;
            let roles = if admin {
                BTreeSet::from([Role::Admin, Role::Viewer])
            } else {
                BTreeSet::from([Role::Viewer])
            };
            let command = Command::CreateUser {
                name: name.clone(),
                password_hash,
                roles,
                library_access: LibraryAccess::All,
                now_ms: context.clock.now_ms(),
            };
            match cluster.write(command).await? {
                Response::Created(id) => Ok(serde_json::json!({ "id": id, "name": name })),
                Response::Rejected(rejection) => bail!("{rejection}"),
                other => bail!("unexpected answer {other:?}"),
            }
        }
    }
}

/// Rescans this node's libraries when their files change.
async fn watch_libraries(state: crate::http::AppState) {
    let node = state.cluster.id();
    let tables_state = state.clone();
    let folders = move || {
        omega_consensus::state_machine::read::libraries(tables_state.cluster.tables())
            .unwrap_or_default()
            .into_iter()
            .filter(|library| library.node == node)
            .map(|library| (library.id, library.paths))
            .collect()
    };
    let rescan = move |id: u64, why: crate::library::watch::Why| {
        if !watcher_rescans(why, !state.scans.offline(id).is_empty()) {
            return;
        }
        if let Ok(Some(library)) = omega_consensus::state_machine::read::library(state.cluster.tables(), id)
            && let Err(error) = crate::api::libraries::start_scan(&state, library)
        {
            tracing::warn!(library = id, ?error, "cannot rescan");
        }
    };
    if let Err(error) = crate::library::watch::run(folders, rescan, WATCH_QUIET).await {
        tracing::warn!(%error, "library folders are not watched");
    }
}

/// Whether the watcher's reason to rescan a library is this loop's to act
/// on. A folder coming back to a library marked offline is left to
/// [`rescan_returned_libraries`], which waits until an offline folder lists
/// something (an empty mount point can be watched, but is not back): both
/// acting would scan the library twice.
fn watcher_rescans(why: crate::library::watch::Why, library_offline: bool) -> bool {
    why == crate::library::watch::Why::Changed || !library_offline
}

/// Rescans a library whose folders were offline once one of them lists
/// something again (a NAS that came back, a disk mounted again): its items
/// were kept, so they keep their ids and watch state. A library being
/// scanned is left alone: its scan brings the offline list up to date.
async fn rescan_returned_libraries(state: crate::http::AppState) {
    let node = state.cluster.id();
    let mut tick = tokio::time::interval(OFFLINE_RECHECK);
    loop {
        tick.tick().await;
        let Ok(libraries) = omega_consensus::state_machine::read::libraries(state.cluster.tables()) else {
            continue;
        };
        for library in libraries.into_iter().filter(|library| library.node == node) {
            let offline = state.scans.offline(library.id);
            if offline.is_empty() || state.scans.is_running(library.id) {
                continue;
            }
            let back = tokio::task::spawn_blocking(move || {
                offline
                    .iter()
                    .any(|folder| crate::library::scan::lists_something(&folder.path))
            })
            .await
            .unwrap_or(false);
            if back {
                tracing::info!(library = library.id, "offline library folders are back; rescanning");
                if let Err(error) = crate::api::libraries::start_scan(&state, library) {
                    tracing::warn!(?error, "cannot rescan");
                }
            }
        }
    }
}

/// How often offline library folders are looked at again.
const OFFLINE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a library's folders must be quiet before a rescan.
const WATCH_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// Publishes an event when the leader, term or membership changes, or a
/// job changes state (as this node applies it), and keeps the job gauges.
async fn publish_cluster_changes(state: crate::http::AppState) {
    let mut last = None;
    let mut jobs: std::collections::HashMap<u64, (&'static str, Option<u64>)> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    // Registered at zero, so that the family exists before a first change.
    metrics::counter!("omega_raft_leader_changes_total").increment(0);
    loop {
        tick.tick().await;
        if let Ok(all) = omega_consensus::state_machine::read::jobs(state.cluster.tables()) {
            let mut counts: std::collections::BTreeMap<&'static str, u64> = ["queued", "leased", "done", "failed"]
                .into_iter()
                .map(|name| (name, 0))
                .collect();
            for job in &all {
                let view = crate::api::jobs::view(&state, job);
                *counts.entry(view.state).or_default() += 1;
                let now = (view.state, view.node);
                if jobs.get(&job.id) != Some(&now) {
                    state.events.publish(crate::events::Event::Job {
                        id: job.id,
                        item: job.item,
                        state: view.state,
                        node: view.node,
                    });
                    jobs.insert(job.id, now);
                }
            }
            // Bounded by the jobs that exist.
            let existing: std::collections::HashSet<u64> = all.iter().map(|job| job.id).collect();
            jobs.retain(|id, _| existing.contains(id));
            for (name, count) in counts {
                metrics::gauge!("omega_jobs", "state" => name).set(count as f64);
            }
        }
        let status = state.cluster.status();
        let now = (
            status.leader,
            status.term,
            status.members.iter().map(|member| member.id).collect::<Vec<_>>(),
        );
        if last.as_ref() != Some(&now) {
            if last.as_ref().is_some_and(|previous| previous.0 != now.0) {
                metrics::counter!("omega_raft_leader_changes_total").increment(1);
            }
            state.events.publish(crate::events::Event::Cluster {
                leader: now.0,
                term: now.1,
                members: now.2.clone(),
            });
            last = Some(now);
        }
    }
}

/// A job as `omega transcode` prints it (the API's view).
fn job_json(app: &crate::http::AppState, id: u64) -> anyhow::Result<serde_json::Value> {
    let job =
        omega_consensus::state_machine::read::job(app.cluster.tables(), id)?.with_context(|| format!("no job {id}"))?;
    Ok(serde_json::to_value(crate::api::jobs::view(app, &job))?)
}

#[cfg(test)]
mod tests {
    use super::watcher_rescans;
    use crate::library::watch::Why;

    #[test]
    fn a_folder_back_in_an_offline_library_is_rescanned_once_by_the_offline_check() {
        assert!(watcher_rescans(Why::Changed, false));
        assert!(watcher_rescans(Why::Changed, true));
        assert!(watcher_rescans(Why::FolderBack, false));
        assert!(!watcher_rescans(Why::FolderBack, true));
    }
}
