//! The offline-library fault: the founder's media folder vanishes under
//! load (as an unmounted NAS does), is scanned while gone, comes back and
//! is scanned again. No item may change its id, disappear or lose its
//! watch state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ChaosError;
use crate::http;

/// Films in the library (names only: the run does not probe media).
const FILMS: [&str; 3] = ["Harbor Lights (2019)", "Night Train (2021)", "Paper Moon (1973)"];
/// The resume position saved on the first film.
const POSITION_MS: u64 = 12_345;
/// Deadline of each request.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a scan may take.
const SCAN_WITHIN: Duration = Duration::from_secs(60);

/// The library on the founder's disk and what the catalog said of it at
/// the start.
#[derive(Debug)]
pub struct Library {
    folder: PathBuf,
    away: PathBuf,
    id: u64,
    /// (title, id) of every film, by title.
    items: Vec<(String, u64)>,
    watched: u64,
}

/// Writes the media folder under `root`: one folder per film, the film a
/// few bytes (scans that do not probe go by names).
pub fn create_media(root: &Path) -> Result<PathBuf, ChaosError> {
    let folder = root.join("media").join("Movies");
    for film in FILMS {
        let dir = folder.join(film);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{film}.mkv")), film.as_bytes())?;
    }
    Ok(folder)
}

fn get(addr: SocketAddr, path: &str, token: &str) -> Result<Value, ChaosError> {
    let answer = http::request(addr, "GET", path, Some(token), None, DEADLINE)
        .filter(|answer| answer.status == 200)
        .ok_or_else(|| ChaosError::Command(format!("GET {path} on {addr} failed")))?;
    serde_json::from_slice(&answer.body).map_err(|error| ChaosError::Command(format!("GET {path}: {error}")))
}

impl Library {
    /// Finds the library of `folder` on the founder (`addr`), waits for
    /// its first scan, notes its items and saves a resume position.
    pub fn prepare(addr: SocketAddr, token: &str, folder: PathBuf) -> Result<Library, ChaosError> {
        let started = Instant::now();
        let wanted = folder.to_string_lossy().into_owned();
        let id = loop {
            let libraries = get(addr, "/api/v1/libraries", token)?;
            let found = libraries.as_array().and_then(|all| {
                all.iter()
                    .find(|library| {
                        library["paths"]
                            .as_array()
                            .is_some_and(|paths| paths.contains(&json!(wanted)))
                    })
                    .and_then(|library| library["id"].as_u64())
            });
            if let Some(id) = found {
                break id;
            }
            if started.elapsed() > SCAN_WITHIN {
                return Err(ChaosError::Command(format!("no library for {wanted}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut library = Library {
            away: folder.with_extension("away"),
            folder,
            id,
            items: Vec::new(),
            watched: 0,
        };
        library.wait_for_scan(addr, token)?;
        library.items = library.films(addr, token)?;
        if library.items.len() != FILMS.len() {
            return Err(ChaosError::Command(format!("the first scan found {:?}", library.items)));
        }
        library.watched = library.items[0].1;
        let body = json!({ "position_ms": POSITION_MS }).to_string();
        let path = format!("/api/v1/items/{}/progress", library.watched);
        http::request(addr, "POST", &path, Some(token), Some(&body), DEADLINE)
            .filter(|answer| answer.status == 200)
            .ok_or_else(|| ChaosError::Command("cannot save a resume position".into()))?;
        Ok(library)
    }

    /// The films the catalog lists now, by title.
    fn films(&self, addr: SocketAddr, token: &str) -> Result<Vec<(String, u64)>, ChaosError> {
        let page = get(addr, "/api/v1/items?type=movie&limit=100", token)?;
        let mut films: Vec<(String, u64)> = page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|item| item["library"].as_u64().is_none_or(|library| library == self.id))
                    .filter_map(|item| Some((item["title"].as_str()?.to_owned(), item["id"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        films.sort();
        Ok(films)
    }

    /// Waits until the library's scan is done.
    fn wait_for_scan(&self, addr: SocketAddr, token: &str) -> Result<(), ChaosError> {
        let started = Instant::now();
        let path = format!("/api/v1/libraries/{}/scan", self.id);
        loop {
            let status = get(addr, &path, token).unwrap_or(Value::Null);
            if status["state"] == "done" {
                return Ok(());
            }
            if status["state"] == "failed" || started.elapsed() > SCAN_WITHIN {
                return Err(ChaosError::Command(format!(
                    "the scan of library {} ended as {status}",
                    self.id
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks the founder to scan now and waits for the scan.
    fn scan(&self, addr: SocketAddr, token: &str) -> Result<(), ChaosError> {
        let path = format!("/api/v1/libraries/{}/scan", self.id);
        http::request(addr, "POST", &path, Some(token), None, DEADLINE)
            .filter(|answer| answer.status == 202)
            .ok_or_else(|| ChaosError::Command(format!("POST {path} failed")))?;
        self.wait_for_scan(addr, token)
    }

    /// The fault: the folder goes away and is scanned, stays away for
    /// `away_for`, comes back and is scanned again.
    pub fn go_offline_and_back(&self, addr: SocketAddr, token: &str, away_for: Duration) -> Result<(), ChaosError> {
        std::fs::rename(&self.folder, &self.away)?;
        let offline = self.scan(addr, token);
        std::thread::sleep(away_for);
        std::fs::rename(&self.away, &self.folder)?;
        offline?;
        self.scan(addr, token)
    }

    /// What went wrong: films whose id changed or that vanished, and a
    /// resume position lost.
    pub fn verify(&self, addr: SocketAddr, token: &str) -> Vec<String> {
        let mut violations = Vec::new();
        match self.films(addr, token) {
            Ok(films) if films == self.items => {}
            Ok(films) => violations.push(format!("the films were {:?}, now {films:?}", self.items)),
            Err(error) => violations.push(format!("cannot list the films: {error}")),
        }
        match get(addr, &format!("/api/v1/items/{}", self.watched), token) {
            Ok(item) if item["user_data"]["position_ms"] == POSITION_MS => {}
            Ok(item) => violations.push(format!(
                "the resume position of item {} was {POSITION_MS} ms, now {}",
                self.watched, item["user_data"]["position_ms"]
            )),
            Err(error) => violations.push(format!("cannot read item {}: {error}", self.watched)),
        }
        violations
    }
}
