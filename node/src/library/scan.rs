//! Scanning a library: walk its folders, recognise media by extension and
//! name, and plan the catalog items (parents before children). Planning
//! touches only the file system; writing the plan goes through Raft.
//!
//! Robustness: symlinks are not followed (no loops), hidden entries and
//! unreadable folders are skipped with a reason, depth is bounded, and a
//! name that is not UTF-8 is skipped with a reason rather than mangled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use omega_consensus::model::{ItemKind, ItemWrite, Library, LibraryKind, MediaRef, NodeId};
use serde::Serialize;

use super::naming::{self, AUDIO, BOOK, IMAGE, VIDEO};
use super::sidecar;

/// Folder depth followed below a library path.
const DEPTH_MAX: usize = 16;

/// What a scan planned, and what it skipped.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// Items to upsert, parents before children.
    #[serde(skip)]
    pub items: Vec<ItemWrite>,
    /// Media files seen.
    pub files: u64,
    /// Entries skipped, with why.
    pub skipped: Vec<Skipped>,
    /// Folder images found for items, by item key.
    #[serde(skip)]
    pub art: BTreeMap<String, PathBuf>,
    /// Library folders that could not be listed (missing, unmounted,
    /// unreadable): nothing under them is removed.
    #[serde(skip)]
    pub offline: Vec<Skipped>,
    /// Library folders that were listed but hold nothing visible: an
    /// unmounted mount point looks like this, so the caller decides whether
    /// the items it knows under them stay.
    #[serde(skip)]
    pub empty_roots: Vec<String>,
    /// Folders below a root whose walk failed part-way: nothing under them
    /// is removed either, since what they hold is unknown.
    #[serde(skip)]
    pub incomplete: Vec<String>,
}

/// An entry the scan passed over.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    /// Its path (lossy for names that are not UTF-8).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The files of one folder: all names, and the images by lowercase stem.
struct Listing {
    folder: PathBuf,
    names: Vec<String>,
    images: Vec<(String, String)>,
}

struct Planner<'a> {
    library: &'a Library,
    node: NodeId,
    plan: Plan,
    /// Parents by key, so that each is planned once, before its children.
    parents: BTreeSet<String>,
    /// Audiobook folders and their files.
    audiobooks: BTreeMap<PathBuf, Vec<(String, u64)>>,
    /// The file names of the folder last looked at (the walk is sorted, so
    /// a folder's files come together).
    listing: Option<Listing>,
}

/// An item of `library` with nothing but its key, kind, parent and title.
pub fn new_item(library: u64, key: String, kind: ItemKind, parent_key: Option<String>, title: String) -> ItemWrite {
    ItemWrite {
        key,
        library,
        kind,
        parent_key,
        sort_title: naming::sort_title(&title),
        title,
        year: None,
        index: None,
        metadata: BTreeMap::new(),
        media: Vec::new(),
    }
}

fn wanted(kind: LibraryKind, extension: &str) -> bool {
    let list = match kind {
        LibraryKind::Movies | LibraryKind::Shows => VIDEO,
        LibraryKind::Music | LibraryKind::Audiobooks => AUDIO,
        LibraryKind::Books => BOOK,
        LibraryKind::Photos => IMAGE,
    };
    list.contains(&extension)
}

/// Plans the items of `library`, whose folders are on this node (`node`).
pub fn plan(library: &Library, node: NodeId) -> Plan {
    let mut planner = Planner {
        library,
        node,
        plan: Plan::default(),
        parents: BTreeSet::new(),
        audiobooks: BTreeMap::new(),
        listing: None,
    };
    for root in &library.paths {
        match visible_entries(Path::new(root)) {
            Err(reason) => planner.plan.offline.push(Skipped {
                path: root.clone(),
                reason,
            }),
            Ok(0) => planner.plan.empty_roots.push(root.clone()),
            Ok(_) => planner.walk(Path::new(root)),
        }
    }
    planner.finish_audiobooks();
    planner.plan
}

/// How many entries a library folder lists, hidden ones aside; why not
/// when it cannot be listed.
fn visible_entries(root: &Path) -> Result<usize, String> {
    let metadata = std::fs::metadata(root).map_err(|error| format!("cannot reach the folder: {error}"))?;
    if !metadata.is_dir() {
        return Err("it is not a folder".to_owned());
    }
    let entries = std::fs::read_dir(root).map_err(|error| format!("cannot list the folder: {error}"))?;
    let mut visible = 0;
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot list the folder: {error}"))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            visible += 1;
        }
    }
    Ok(visible)
}

/// True when library folder `path` can be listed and shows something: an
/// offline folder that is back.
pub fn lists_something(path: &str) -> bool {
    matches!(visible_entries(Path::new(path)), Ok(count) if count > 0)
}

/// True when `path` is `folder` or lies below it (whole components, so
/// `/media/tv2` is not below `/media/tv`).
pub fn is_under(path: &str, folder: &str) -> bool {
    Path::new(path).starts_with(folder)
}

impl Planner<'_> {
    fn skip(&mut self, path: &Path, reason: impl Into<String>) {
        self.plan.skipped.push(Skipped {
            path: path.to_string_lossy().into_owned(),
            reason: reason.into(),
        });
    }

    fn walk(&mut self, root: &Path) {
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .max_depth(DEPTH_MAX)
            .sort_by_file_name();
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    let path = error.path().unwrap_or(root).to_path_buf();
                    // What lies below is unknown: keep its items.
                    self.plan.incomplete.push(path.to_string_lossy().into_owned());
                    self.skip(&path, format!("unreadable: {error}"));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy();
            if entry.depth() > 0 && name.starts_with('.') {
                continue;
            }
            if !entry.file_type().is_file() {
                continue;
            }
            let Some(file_name) = entry.file_name().to_str() else {
                self.skip(entry.path(), "the name is not UTF-8");
                continue;
            };
            let Some(extension) = naming::extension(file_name) else {
                continue;
            };
            if !wanted(self.library.kind, &extension) {
                continue;
            }
            let size = match entry.metadata() {
                Ok(metadata) => metadata.len(),
                Err(error) => {
                    self.skip(entry.path(), format!("cannot stat: {error}"));
                    continue;
                }
            };
            if size == 0 {
                self.skip(entry.path(), "empty file");
                continue;
            }
            let Some(path) = entry.path().to_str().map(str::to_owned) else {
                self.skip(entry.path(), "the path is not UTF-8");
                continue;
            };
            let relative: Vec<String> = entry
                .path()
                .strip_prefix(root)
                .unwrap_or(entry.path())
                .components()
                .map(|component| component.as_os_str().to_string_lossy().into_owned())
                .collect();
            self.plan.files += 1;
            self.file(&path, &relative, size);
        }
    }

    fn media(&self, path: &str, size: u64) -> Vec<MediaRef> {
        vec![MediaRef {
            node: self.node,
            path: path.to_owned(),
            blob: None,
            size,
        }]
    }

    fn item(&self, key: String, kind: ItemKind, parent_key: Option<String>, title: String) -> ItemWrite {
        new_item(self.library.id, key, kind, parent_key, title)
    }

    /// The files in `folder` (cached for consecutive calls).
    fn listing(&mut self, folder: &Path) -> &Listing {
        let stale = self.listing.as_ref().is_none_or(|listing| listing.folder != folder);
        if stale || self.listing.is_none() {
            let mut names: Vec<String> = std::fs::read_dir(folder)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
                        .take(10_000)
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            let images = super::art::images(&names);
            self.listing = Some(Listing {
                folder: folder.to_path_buf(),
                names,
                images,
            });
        }
        // Just filled when missing or stale.
        self.listing.get_or_insert_with(|| Listing {
            folder: folder.to_path_buf(),
            names: Vec::new(),
            images: Vec::new(),
        })
    }

    /// The names of the files in `folder`.
    fn siblings(&mut self, folder: &Path) -> &[String] {
        &self.listing(folder).names
    }

    /// Adds what the files beside a video say: its NFO (title, year, plot)
    /// and external subtitles.
    fn sidecars(&mut self, item: &mut ItemWrite, path: &str, nfo_names: &[&str]) {
        let path = Path::new(path);
        let (Some(folder), Some(file_name)) = (path.parent(), path.file_name().and_then(|name| name.to_str())) else {
            return;
        };
        let stem = naming::stem(file_name).to_owned();
        let siblings = self.siblings(folder).to_vec();
        let subtitles: Vec<String> = sidecar::subtitles(file_name, &siblings)
            .into_iter()
            .map(|(language, name)| format!("{language}:{name}"))
            .collect();
        if !subtitles.is_empty() {
            item.metadata.insert("external_subtitles".into(), subtitles.join(","));
        }
        let own_nfo = format!("{stem}.nfo");
        let nfo = std::iter::once(own_nfo.as_str())
            .chain(nfo_names.iter().copied())
            .filter(|name| siblings.iter().any(|sibling| sibling == name))
            .find_map(|name| sidecar::read_nfo(&folder.join(name)));
        if let Some(nfo) = nfo {
            if let Some(title) = nfo.title {
                item.sort_title = naming::sort_title(&title);
                item.title = title;
            }
            if nfo.year.is_some() {
                item.year = nfo.year;
            }
            if let Some(plot) = nfo.plot {
                item.metadata.insert("overview".into(), plot);
            }
        }
    }

    /// Plans a parent item once; true the first time.
    fn parent(&mut self, item: ItemWrite) -> bool {
        let new = self.parents.insert(item.key.clone());
        if new {
            self.plan.items.push(item);
        }
        new
    }

    /// Notes the image in `folder` that names the art of item `key`.
    fn folder_art(&mut self, key: &str, kind: ItemKind, folder: &Path, stem: Option<&str>, generic: bool) {
        let images = &self.listing(folder).images;
        if let Some(art) = super::art::find_in_folder(kind, folder, images, stem, generic) {
            self.plan.art.insert(key.to_owned(), art);
        }
    }

    fn file(&mut self, path: &str, relative: &[String], size: u64) {
        let file_name = relative.last().map_or("", String::as_str);
        let stem = naming::stem(file_name);
        match self.library.kind {
            LibraryKind::Movies => {
                // `Title (Year)/Title (Year).mkv` names the film by its folder.
                let source = if relative.len() >= 2 {
                    &relative[relative.len() - 2]
                } else {
                    stem
                };
                let (title, year) = naming::title_and_year(source);
                let (title, year) = if year.is_none() && relative.len() >= 2 {
                    naming::title_and_year(stem)
                } else {
                    (title, year)
                };
                let mut movie = self.item(format!("file:{path}"), ItemKind::Movie, None, title);
                movie.year = year;
                movie.media = self.media(path, size);
                self.sidecars(&mut movie, path, &["movie.nfo"]);
                let folder = Path::new(path).parent().unwrap_or(Path::new("/"));
                self.folder_art(&movie.key, ItemKind::Movie, folder, Some(stem), relative.len() >= 2);
                self.plan.items.push(movie);
            }
            LibraryKind::Shows => self.episode(path, relative, stem, size),
            LibraryKind::Music => {
                let artist = if relative.len() >= 3 {
                    relative[relative.len() - 3].clone()
                } else {
                    "Unknown Artist".into()
                };
                let album = if relative.len() >= 2 {
                    relative[relative.len() - 2].clone()
                } else {
                    "Unknown Album".into()
                };
                let artist_key = super::music::artist_key(self.library.id, &artist);
                let artist_item = self.item(artist_key.clone(), ItemKind::Artist, None, naming::clean(&artist));
                self.parent(artist_item);
                // Keyed by title without the year, as tags name albums.
                let (album_title, album_year) = naming::title_and_year(&album);
                let album_key = super::music::album_key(&artist_key, &album_title);
                let mut album_item = self.item(album_key.clone(), ItemKind::Album, Some(artist_key), album_title);
                album_item.year = album_year;
                if self.parent(album_item) && relative.len() >= 2 {
                    let folder = Path::new(path).parent().unwrap_or(Path::new("/"));
                    self.folder_art(&album_key, ItemKind::Album, folder, None, true);
                }
                let (number, title) = naming::track(stem);
                let mut track = self.item(format!("file:{path}"), ItemKind::Track, Some(album_key), title);
                track.index = number;
                track.media = self.media(path, size);
                self.plan.items.push(track);
            }
            LibraryKind::Audiobooks => {
                // A folder of audio files is one book; a lone file is one too.
                let folder = Path::new(path).parent().unwrap_or(Path::new("/")).to_path_buf();
                if relative.len() >= 2 {
                    self.audiobooks.entry(folder).or_default().push((path.to_owned(), size));
                } else {
                    let mut book = self.item(format!("file:{path}"), ItemKind::Audiobook, None, naming::clean(stem));
                    book.media = self.media(path, size);
                    self.plan.items.push(book);
                }
            }
            LibraryKind::Books => {
                let mut book = self.item(format!("file:{path}"), ItemKind::Book, None, naming::clean(stem));
                book.media = self.media(path, size);
                match super::books::BookInfo::read(Path::new(path)) {
                    Ok(info) => {
                        if let Some(title) = info.title {
                            book.sort_title = naming::sort_title(&title);
                            book.title = title;
                        }
                        for (key, value) in [
                            ("author", info.author),
                            ("published", info.date),
                            ("language", info.language),
                            ("series", info.series),
                            ("series_number", info.number),
                            ("pages", info.pages.map(|pages| pages.to_string())),
                        ] {
                            if let Some(value) = value {
                                book.metadata.insert(key.into(), value);
                            }
                        }
                        book.year = book
                            .metadata
                            .get("published")
                            .and_then(|date| date.get(..4))
                            .and_then(|year| year.parse().ok());
                    }
                    Err(reason) => {
                        self.skip(Path::new(path), reason);
                        return;
                    }
                }
                self.plan.items.push(book);
            }
            LibraryKind::Photos => {
                let mut photo = self.item(format!("file:{path}"), ItemKind::Photo, None, stem.to_owned());
                photo.media = self.media(path, size);
                self.plan.items.push(photo);
            }
        }
    }

    fn episode(&mut self, path: &str, relative: &[String], stem: &str, size: u64) {
        let Some(series_name) = relative.first().filter(|_| relative.len() >= 2) else {
            self.skip(Path::new(path), "an episode must be in a folder named after its series");
            return;
        };
        let folder_season = if relative.len() >= 3 {
            naming::season_folder(&relative[relative.len() - 2])
        } else {
            None
        };
        let numbers = naming::episode_numbers(stem);
        let Some(season) = numbers.map(|(season, _, _)| season).or(folder_season) else {
            self.skip(
                Path::new(path),
                "no season: name it S01E02 or put it in a Season folder",
            );
            return;
        };
        let (series_title, series_year) = naming::title_and_year(series_name);
        let series_key = format!("series:{}:{}", self.library.id, series_name.to_lowercase());
        let mut series = self.item(series_key.clone(), ItemKind::Series, None, series_title.clone());
        series.year = series_year;
        if self.parent(series) {
            // The series folder: the file's path less what lies below it.
            let series_folder = relative[1..].iter().fold(Path::new(path).to_path_buf(), |folder, _| {
                folder.parent().map_or(folder.clone(), Path::to_path_buf)
            });
            self.folder_art(&series_key, ItemKind::Series, &series_folder, None, true);
        }
        let season_key = format!("{series_key}/season:{season}");
        let season_title = if season == 0 {
            "Specials".to_owned()
        } else {
            format!("Season {season}")
        };
        let mut season_item = self.item(season_key.clone(), ItemKind::Season, Some(series_key), season_title);
        season_item.index = Some(season);
        if self.parent(season_item) && relative.len() >= 3 {
            let folder = Path::new(path).parent().unwrap_or(Path::new("/"));
            self.folder_art(&season_key, ItemKind::Season, folder, None, true);
        }
        let mut episode = self.item(
            format!("file:{path}"),
            ItemKind::Episode,
            Some(season_key),
            naming::clean(stem),
        );
        if let Some((_, number, last)) = numbers {
            episode.index = Some(number);
            if let Some(last) = last {
                episode.metadata.insert("episode_end".into(), last.to_string());
            }
            // The file's own episode title (`Show - S01E01 - Pilot`), else
            // the series and the numbers.
            episode.title =
                naming::episode_title(stem).unwrap_or_else(|| format!("{series_title} S{season:02}E{number:02}"));
        }
        episode.media = self.media(path, size);
        self.sidecars(&mut episode, path, &[]);
        self.plan.items.push(episode);
    }

    fn finish_audiobooks(&mut self) {
        let books = std::mem::take(&mut self.audiobooks);
        for (folder, mut files) in books {
            files.sort();
            let title = folder
                .file_name()
                .map(|name| naming::clean(&name.to_string_lossy()))
                .unwrap_or_default();
            let mut book = self.item(format!("folder:{}", folder.display()), ItemKind::Audiobook, None, title);
            book.media = files
                .iter()
                .map(|(path, size)| MediaRef {
                    node: self.node,
                    path: path.clone(),
                    blob: None,
                    size: *size,
                })
                .collect();
            book.metadata.insert("parts".into(), files.len().to_string());
            self.folder_art(&book.key, ItemKind::Audiobook, &folder, None, true);
            self.plan.items.push(book);
        }
    }
}
