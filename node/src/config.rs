//! Configuration: defaults, then a TOML file, then `OMEGA_*` environment
//! variables, then flags (each overriding the one before).
//!
//! The file is the one named by `--config` / `OMEGA_CONFIG`. Flags and
//! variables are read by clap (see [`crate::cli::GlobalArgs`]); this module
//! merges them over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use omega_consensus::Timing;
use omega_storage::{ChunkerConfig, StoreConfig};

use crate::units::parse_bytes;

/// The configuration file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the node keeps its state.
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address (default `0.0.0.0:8420`).
    pub listen: Option<String>,
    /// Store settings.
    #[serde(default)]
    pub store: FileStoreConfig,
    /// Control-plane settings.
    #[serde(default)]
    pub cluster: FileClusterConfig,
    /// Library settings.
    #[serde(default)]
    pub library: FileLibraryConfig,
    /// `[transcode]`.
    #[serde(default)]
    pub transcode: FileTranscodeConfig,
    /// `[p2p]`.
    #[serde(default)]
    pub p2p: FileP2pConfig,
    /// `[http]`.
    #[serde(default)]
    pub http: FileHttpConfig,
}

/// The `[http]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpConfig {
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses
    /// or CIDR networks); from anyone else the header is ignored.
    pub trusted_proxies: Option<Vec<String>>,
    /// Seconds a client has to send a request's headers (default 10).
    pub header_timeout_secs: Option<u64>,
    /// HTTP connections open at once (default: half the open-file limit,
    /// 64 to 16,384).
    pub connections_max: Option<usize>,
    /// HTTP connections open at once from one address (default 256;
    /// trusted proxies are exempt).
    pub connections_per_address: Option<usize>,
}

/// The `[http]` settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `[http] trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A request's headers must arrive within this.
    pub header_timeout: std::time::Duration,
    /// Connections open at once, when set.
    pub connections_max: Option<usize>,
    /// Connections open at once from one address.
    pub connections_per_address: usize,
}

/// The `[p2p]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileP2pConfig {
    /// Run the P2P data plane (default true).
    pub enabled: Option<bool>,
    /// Its QUIC (UDP) listen address (default: the cluster listen address's
    /// IP, any free port; the port in use is recorded in Raft at each
    /// start, so members and clients always find it).
    pub listen: Option<String>,
    /// Find other nodes on the LAN by mDNS (default false: members find
    /// each other through Raft).
    pub mdns: Option<bool>,
    /// Bytes of blobs this node keeps of what it fetched from other
    /// members, to provide them in turn (default "16GiB"; "0": none).
    pub cache_max: Option<String>,
    /// Members that pull a popular file or rendition ahead of demand
    /// (default 2; 0: none).
    pub replicas: Option<usize>,
    /// Distinct viewers within a minute that make a thing popular
    /// (default 3).
    pub popular_after: Option<usize>,
}

/// P2P settings.
#[derive(Debug, Clone)]
pub struct P2pSettings {
    /// Run it.
    pub enabled: bool,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// mDNS discovery.
    pub mdns: bool,
    /// Bytes of relayed blobs kept (0: none).
    pub cache_max: u64,
    /// Members that pull what is popular.
    pub replicas: usize,
    /// Viewers that make a thing popular.
    pub popular_after: usize,
}

/// The `[transcode]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTranscodeConfig {
    /// Transcode at all (default true; false: direct play only, no ffmpeg
    /// needed).
    pub enabled: Option<bool>,
    /// The ffmpeg binary (default `ffmpeg` on the PATH).
    pub ffmpeg: Option<PathBuf>,
    /// The ffprobe binary (default `ffprobe` on the PATH).
    pub ffprobe: Option<PathBuf>,
    /// ffmpeg sessions at once (default: half the CPU cores, at least 1).
    pub max_sessions: Option<usize>,
    /// ffmpeg and ffprobe processes at once, of every kind (default: two
    /// per core and four more, at least `max_sessions` + 2).
    pub max_processes: Option<usize>,
    /// Seconds before an unused session stops (default 60).
    pub idle_secs: Option<u64>,
    /// Try hardware encoders (default true).
    pub hardware: Option<bool>,
    /// Read sources at most this many times real time (default: no limit).
    pub read_rate: Option<f64>,
    /// Work on jobs from the cluster's queue (default true).
    pub worker: Option<bool>,
    /// Job lease length in milliseconds (default 30000).
    pub lease_ms: Option<u64>,
    /// Bytes of HLS segments kept in the store so that each is made once
    /// (default "32GiB"; "0": none kept); past it, the renditions used
    /// longest ago go.
    pub segment_cache_max: Option<String>,
}

/// Transcoding settings.
#[derive(Debug, Clone)]
pub struct TranscodeSettings {
    /// Transcode at all.
    pub enabled: bool,
    /// The ffmpeg binary.
    pub ffmpeg: PathBuf,
    /// The ffprobe binary.
    pub ffprobe: PathBuf,
    /// ffmpeg sessions at once.
    pub max_sessions: usize,
    /// ffmpeg and ffprobe processes at once, of every kind.
    pub max_processes: usize,
    /// An unused session stops after this.
    pub idle: std::time::Duration,
    /// Try hardware encoders.
    pub hardware: bool,
    /// Read sources at most this many times real time.
    pub read_rate: Option<f64>,
    /// Work on jobs from the cluster's queue.
    pub worker: bool,
    /// Job lease length.
    pub lease_ms: u64,
    /// Bytes of HLS segments kept in the store (0: none).
    pub segment_cache_max: u64,
}

/// The `[library]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLibraryConfig {
    /// Run ffprobe on video and audio files while scanning (default true).
    /// Off, files are indexed by name only (for synthetic benchmarks).
    pub probe: Option<bool>,
    /// Rescan a library when files under its folders change (default true).
    pub watch: Option<bool>,
}

/// The `[cluster]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileClusterConfig {
    /// Raft-over-QUIC listen address (default `0.0.0.0:8421`).
    pub listen: Option<String>,
    /// Address other members use to reach this one (default: the listen
    /// address, or this host's address when listening on all interfaces).
    pub advertise: Option<String>,
    /// Leader heartbeat interval in milliseconds (default 100).
    pub heartbeat_ms: Option<u64>,
    /// Shortest election timeout in milliseconds (default 400).
    pub election_min_ms: Option<u64>,
    /// Longest election timeout in milliseconds (default 800).
    pub election_max_ms: Option<u64>,
    /// Log entries between snapshots (default 20000).
    pub snapshot_every: Option<u64>,
    /// Entries kept behind a snapshot (default 1000).
    pub keep_behind_snapshot: Option<u64>,
}

/// The `[store]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStoreConfig {
    /// Hot tier budget, e.g. `"500GiB"`.
    pub hot_bytes_max: Option<String>,
    /// Demotion starts above this share of the budget (default 90).
    pub high_watermark_percent: Option<u8>,
    /// Demotion stops at this share (default 75).
    pub low_watermark_percent: Option<u8>,
    /// Cold tier URL: `file:///path` or `s3://bucket/prefix`.
    pub cold_url: Option<String>,
    /// Cold tier options, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`.
    #[serde(default)]
    pub cold_options: BTreeMap<String, String>,
    /// Chunk limits of a new store (advanced; fixed once the store exists).
    pub chunk_min_bytes: Option<u32>,
    /// See `chunk_min_bytes`.
    pub chunk_avg_bytes: Option<u32>,
    /// See `chunk_min_bytes`.
    pub chunk_max_bytes: Option<u32>,
}

/// Values given by flags or environment variables, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir` / `OMEGA_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--hot-bytes-max` / `OMEGA_STORE_HOT_BYTES_MAX`.
    pub hot_bytes_max: Option<String>,
    /// `--cold-url` / `OMEGA_STORE_COLD_URL`.
    pub cold_url: Option<String>,
    /// `--cluster-listen` / `OMEGA_CLUSTER_LISTEN`.
    pub cluster_listen: Option<String>,
    /// `--listen` / `OMEGA_LISTEN`.
    pub listen: Option<String>,
    /// `--p2p-listen` / `OMEGA_P2P_LISTEN`.
    pub p2p_listen: Option<String>,
}

/// Default HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 8420;

/// Bytes of relayed blobs a node keeps by default.
pub const DEFAULT_RELAY_CACHE: u64 = 16 << 30;
/// Default `[transcode] segment_cache_max`.
pub const DEFAULT_SEGMENT_CACHE: u64 = 32 << 30;

/// The port `--p2p-listen` examples use (the default is any free port).
pub const DEFAULT_P2P_PORT: u16 = 8422;

/// Default Raft-over-QUIC port.
pub const DEFAULT_CLUSTER_PORT: u16 = 8421;

/// Control-plane settings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Where Raft over QUIC listens.
    pub listen: SocketAddr,
    /// What other members dial, when it differs from `listen`: an address
    /// or a host name with a port.
    pub advertise: Option<String>,
    /// Heartbeats, elections, snapshots.
    pub timing: Timing,
}

/// The merged configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the node keeps its state.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Store settings.
    pub store: StoreConfig,
    /// Control-plane settings.
    pub cluster: ClusterSettings,
    /// ffprobe scanned files.
    pub probe_media: bool,
    /// Watch library folders for changes.
    pub watch_media: bool,
    /// Transcoding.
    pub transcode: TranscodeSettings,
    /// The P2P data plane.
    pub p2p: P2pSettings,
    /// `[http]`.
    pub http: HttpSettings,
}

/// `[cluster] advertise`: an address (`10.0.0.5:8421`, `[fd00::5]:8421`) or
/// a host name with a port (`omega-0.omega.media.svc:8421`), which members
/// look up each time they connect.
fn parse_advertise(text: &str) -> anyhow::Result<String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let refused = || {
        anyhow::anyhow!(
            "cluster.advertise: {text:?} is neither an address like 10.0.0.5:{DEFAULT_CLUSTER_PORT} nor a host name with a port like omega-0.example:{DEFAULT_CLUSTER_PORT}"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(refused)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !host_ok || port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(refused());
    }
    Ok(text.to_owned())
}

fn parse_addr(what: &str, text: &str, example_port: u16) -> anyhow::Result<SocketAddr> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{what}: {text:?} is not an address like 0.0.0.0:{example_port}"))
}

fn cluster_settings(file: FileClusterConfig, overrides: &Overrides) -> anyhow::Result<ClusterSettings> {
    let listen = match overrides.cluster_listen.as_deref().or(file.listen.as_deref()) {
        Some(text) => parse_addr("cluster listen address", text, DEFAULT_CLUSTER_PORT)?,
        None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_CLUSTER_PORT)),
    };
    let advertise = file.advertise.as_deref().map(parse_advertise).transpose()?;
    let defaults = Timing::DEFAULT;
    let millis =
        |value: Option<u64>, default: std::time::Duration| value.map_or(default, std::time::Duration::from_millis);
    let timing = Timing {
        heartbeat: millis(file.heartbeat_ms, defaults.heartbeat),
        election_min: millis(file.election_min_ms, defaults.election_min),
        election_max: millis(file.election_max_ms, defaults.election_max),
        snapshot_every: file.snapshot_every.unwrap_or(defaults.snapshot_every),
        keep_behind_snapshot: file.keep_behind_snapshot.unwrap_or(defaults.keep_behind_snapshot),
    };
    Ok(ClusterSettings {
        listen,
        advertise,
        timing,
    })
}

impl Config {
    /// Loads the file (if any) and applies the overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let file_config = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|error| anyhow::anyhow!("config {}: {}", path.display(), error.message()))?
            }
            None => FileConfig::default(),
        };
        Config::merge(file_config, overrides)
    }

    fn merge(file: FileConfig, overrides: &Overrides) -> anyhow::Result<Config> {
        let data_dir = overrides
            .data_dir
            .clone()
            .or(file.data_dir)
            .map_or_else(default_data_dir, Ok)?;
        let store_file = file.store;
        let hot_bytes_max = overrides
            .hot_bytes_max
            .as_deref()
            .or(store_file.hot_bytes_max.as_deref())
            .map(|text| parse_bytes(text).map_err(|error| anyhow::anyhow!("store.hot_bytes_max: {error}")))
            .transpose()?;
        let defaults = StoreConfig::default();
        let chunker = ChunkerConfig {
            min_bytes: store_file.chunk_min_bytes.unwrap_or(defaults.chunker.min_bytes),
            avg_bytes: store_file.chunk_avg_bytes.unwrap_or(defaults.chunker.avg_bytes),
            max_bytes: store_file.chunk_max_bytes.unwrap_or(defaults.chunker.max_bytes),
        };
        let store = StoreConfig {
            chunker,
            hot_bytes_max,
            high_watermark_percent: store_file
                .high_watermark_percent
                .unwrap_or(defaults.high_watermark_percent),
            low_watermark_percent: store_file
                .low_watermark_percent
                .unwrap_or(defaults.low_watermark_percent),
            cold_url: overrides.cold_url.clone().or(store_file.cold_url),
            cold_options: store_file.cold_options.into_iter().collect(),
            pack_target_bytes: defaults.pack_target_bytes,
        };
        let cluster = cluster_settings(file.cluster, overrides)?;
        let p2p = P2pSettings {
            enabled: file.p2p.enabled.unwrap_or(true),
            listen: match overrides.p2p_listen.as_deref().or(file.p2p.listen.as_deref()) {
                Some(text) => parse_addr("P2P listen address", text, DEFAULT_P2P_PORT)?,
                None => SocketAddr::new(cluster.listen.ip(), 0),
            },
            mdns: file.p2p.mdns.unwrap_or(false),
            cache_max: match file.p2p.cache_max.as_deref() {
                Some(text) => {
                    crate::units::parse_bytes(text).map_err(|why| anyhow::anyhow!("[p2p] cache_max: {why}"))?
                }
                None => DEFAULT_RELAY_CACHE,
            },
            replicas: file.p2p.replicas.unwrap_or(2).min(64),
            popular_after: file.p2p.popular_after.unwrap_or(3).max(1),
        };
        let listen = match overrides.listen.as_deref().or(file.listen.as_deref()) {
            Some(text) => parse_addr("HTTP listen address", text, DEFAULT_HTTP_PORT)?,
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
        };
        let http = HttpSettings {
            trusted_proxies: crate::client_addr::parse_trusted(&file.http.trusted_proxies.unwrap_or_default())
                .map_err(anyhow::Error::msg)?,
            header_timeout: std::time::Duration::from_secs(file.http.header_timeout_secs.unwrap_or(10).clamp(1, 3600)),
            connections_max: file.http.connections_max.map(|max| max.max(1)),
            connections_per_address: file.http.connections_per_address.unwrap_or(256).max(1),
        };
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let max_sessions = file.transcode.max_sessions.unwrap_or(cores / 2).clamp(1, 256);
        Ok(Config {
            p2p,
            http,
            probe_media: file.library.probe.unwrap_or(true),
            watch_media: file.library.watch.unwrap_or(true),
            transcode: TranscodeSettings {
                enabled: file.transcode.enabled.unwrap_or(true),
                ffmpeg: file.transcode.ffmpeg.unwrap_or_else(|| "ffmpeg".into()),
                ffprobe: file.transcode.ffprobe.unwrap_or_else(|| "ffprobe".into()),
                max_sessions,
                max_processes: file
                    .transcode
                    .max_processes
                    .unwrap_or_else(|| (cores * 2 + 4).max(max_sessions + 2))
                    .clamp(1, 1024),
                idle: std::time::Duration::from_secs(file.transcode.idle_secs.unwrap_or(60)),
                hardware: file.transcode.hardware.unwrap_or(true),
                read_rate: file.transcode.read_rate.filter(|rate| rate.is_finite() && *rate > 0.0),
                worker: file.transcode.worker.unwrap_or(true),
                lease_ms: file.transcode.lease_ms.unwrap_or(30_000).clamp(1_000, 3_600_000),
                segment_cache_max: match file.transcode.segment_cache_max.as_deref() {
                    Some(text) => crate::units::parse_bytes(text)
                        .map_err(|why| anyhow::anyhow!("[transcode] segment_cache_max: {why}"))?,
                    None => DEFAULT_SEGMENT_CACHE,
                },
            },
            data_dir,
            listen,
            store,
            cluster,
        })
    }

    /// The control plane's directory inside the data directory.
    pub fn cluster_dir(&self) -> PathBuf {
        self.data_dir.join("cluster")
    }

    /// The running node's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("omega.sock")
    }

    /// The store's directory inside the data directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// `$XDG_DATA_HOME/omega`, else `~/.local/share/omega`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        return Ok(PathBuf::from(xdg).join("omega"));
    }
    let home = std::env::var_os("HOME")
        .filter(|value| !value.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/omega"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
            data_dir = "/from/file"
            [store]
            hot_bytes_max = "1GiB"
            cold_url = "file:///cold"
            [store.cold_options]
            aws_region = "eu-west-1"
            "#,
        )
        .unwrap();
        let overrides = Overrides {
            data_dir: Some("/from/flag".into()),
            hot_bytes_max: None,
            cold_url: Some("s3://bucket/x".into()),
            cluster_listen: None,
            listen: None,
            p2p_listen: None,
        };
        let config = Config::merge(file, &overrides).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.store.hot_bytes_max, Some(1 << 30));
        assert_eq!(config.store.cold_url.as_deref(), Some("s3://bucket/x"));
        assert_eq!(
            config.store.cold_options,
            vec![("aws_region".to_string(), "eu-west-1".to_string())]
        );
    }

    #[test]
    fn the_commented_sample_file_parses_and_sets_the_relay_cache() {
        let sample = include_str!("../../deploy/systemd/omega.toml");
        let file: FileConfig = toml::from_str(sample).unwrap();
        let overrides = Overrides {
            data_dir: Some("/data".into()),
            hot_bytes_max: None,
            cold_url: None,
            cluster_listen: None,
            listen: None,
            p2p_listen: None,
        };
        let config = Config::merge(file, &overrides).unwrap();
        assert_eq!(config.p2p.cache_max, DEFAULT_RELAY_CACHE);
        let none: FileConfig = toml::from_str("[p2p]\ncache_max = \"0\"").unwrap();
        assert_eq!(Config::merge(none, &overrides).unwrap().p2p.cache_max, 0);
        let bad: FileConfig = toml::from_str("[p2p]\ncache_max = \"lots\"").unwrap();
        let error = Config::merge(bad, &overrides).unwrap_err().to_string();
        assert!(error.contains("cache_max"), "{error}");
    }

    /// Goal (hardening, item 15): `[cluster] advertise` takes a host name
    /// with a port, as well as an address. Failed before: names were refused.
    #[test]
    fn advertise_takes_addresses_and_host_names() {
        for good in [
            "10.0.0.5:8421",
            "[fd00::5]:8421",
            "omega-0.omega.media.svc:8421",
            "nas:9000",
        ] {
            assert_eq!(parse_advertise(good).unwrap(), good);
        }
        for bad in [
            "nas",
            "nas:",
            ":8421",
            "nas:0",
            "nas:70000",
            "bad host:8421",
            "a..b:8421",
            "x_y:1",
        ] {
            assert!(parse_advertise(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<FileConfig>("colour = 3").is_err());
        assert!(toml::from_str::<FileConfig>("[store]\nhot = 1").is_err());
    }
}
