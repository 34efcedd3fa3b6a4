//! E-book metadata: an EPUB's package document (title, author, date,
//! language), found through `META-INF/container.xml`; a PDF's Info
//! dictionary and page count; a comic book archive's `ComicInfo.xml` and
//! page count.

use std::io::Read;
use std::path::Path;

/// Largest XML member read from an EPUB.
const MEMBER_MAX_BYTES: u64 = 1 << 20;
/// Members an EPUB may list before it is refused as a zip bomb of names.
const MEMBERS_MAX: usize = 100_000;

/// What an EPUB says of itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BookInfo {
    /// `dc:title`.
    pub title: Option<String>,
    /// `dc:creator`.
    pub author: Option<String>,
    /// `dc:date`.
    pub date: Option<String>,
    /// `dc:language`.
    pub language: Option<String>,
    /// Pages (PDF, CBZ).
    pub pages: Option<u32>,
    /// The series a comic belongs to.
    pub series: Option<String>,
    /// Its number in the series.
    pub number: Option<String>,
}

/// Largest PDF whose metadata is read (the parser loads the whole file).
const PDF_MAX_BYTES: u64 = 512 << 20;

impl BookInfo {
    /// Reads whatever the file's format says of itself.
    pub fn read(path: &Path) -> Result<BookInfo, String> {
        match super::naming::extension(&path.to_string_lossy()).as_deref() {
            Some("epub") => read_epub(path),
            Some("pdf") => read_pdf(path),
            Some("cbz") => read_cbz(path),
            _ => Ok(BookInfo::default()),
        }
    }
}

fn member(archive: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<String, String> {
    let file = archive.by_name(name).map_err(|error| format!("{name}: {error}"))?;
    let mut text = String::new();
    file.take(MEMBER_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(|error| format!("{name}: {error}"))?;
    Ok(text)
}

/// The text of the first element named `tag` (with any attributes).
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = xml.find(&format!("<{tag}"))?;
    let after_name = &xml[open + tag.len() + 1..];
    // `<dc:title>` or `<dc:title id="t">`, not `<dc:titlefoo>`.
    if !after_name.starts_with(['>', ' ', '\t', '\n', '\r']) {
        return None;
    }
    let start = open + tag.len() + 1 + after_name.find('>')? + 1;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let text = xml[start..end]
        .trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    let text: String = text.chars().take(1024).collect();
    (!text.is_empty()).then_some(text)
}

/// Reads an EPUB's metadata; an error names what is wrong.
pub fn read_epub(path: &Path) -> Result<BookInfo, String> {
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| format!("not an EPUB: {error}"))?;
    if archive.len() > MEMBERS_MAX {
        return Err("too many members".into());
    }
    let container = member(&mut archive, "META-INF/container.xml")?;
    let rootfile = container
        .find("full-path=\"")
        .map(|start| &container[start + 11..])
        .and_then(|rest| rest.split('"').next())
        .ok_or("container.xml names no package document")?
        .to_owned();
    let package = member(&mut archive, &rootfile)?;
    Ok(BookInfo {
        title: element(&package, "dc:title"),
        author: element(&package, "dc:creator"),
        date: element(&package, "dc:date"),
        language: element(&package, "dc:language"),
        ..BookInfo::default()
    })
}

/// Reads a PDF's Info dictionary and page count.
pub fn read_pdf(path: &Path) -> Result<BookInfo, String> {
    let size = std::fs::metadata(path).map_err(|error| error.to_string())?.len();
    if size > PDF_MAX_BYTES {
        // Too large to parse whole; the file is still a book.
        return Ok(BookInfo::default());
    }
    let metadata = lopdf::Document::load_metadata(path).map_err(|error| format!("not a PDF: {error}"))?;
    let clean = |text: Option<String>| {
        text.map(|text| text.trim().chars().take(1024).collect::<String>())
            .filter(|text| !text.is_empty())
    };
    Ok(BookInfo {
        title: clean(metadata.title),
        author: clean(metadata.author),
        date: clean(metadata.creation_date).and_then(|date| pdf_date(&date)),
        language: None,
        pages: Some(metadata.page_count),
        series: None,
        number: None,
    })
}

/// `D:20210615143005+02'00'` as `2021-06-15`; a bare year as itself.
fn pdf_date(raw: &str) -> Option<String> {
    let digits: String = raw
        .trim_start_matches("D:")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.len() {
        4 => Some(digits),
        6 | 7 => Some(format!("{}-{}", &digits[..4], &digits[4..6])),
        len if len >= 8 => Some(format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..8])),
        _ => None,
    }
}

/// Reads a comic book archive: `ComicInfo.xml` (title, series, number,
/// writer, year, language) when present, and its pages (image members).
pub fn read_cbz(path: &Path) -> Result<BookInfo, String> {
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| format!("not a CBZ: {error}"))?;
    if archive.len() > MEMBERS_MAX {
        return Err("too many members".into());
    }
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(std::borrow::Cow::into_owned)
        .collect();
    let pages = names
        .iter()
        .filter(|name| {
            super::naming::extension(name).is_some_and(|extension| super::naming::IMAGE.contains(&extension.as_str()))
        })
        .count();
    let mut info = BookInfo {
        pages: u32::try_from(pages).ok(),
        ..BookInfo::default()
    };
    let comic_info = names.iter().find(|name| name.eq_ignore_ascii_case("ComicInfo.xml"));
    if let Some(name) = comic_info {
        let xml = member(&mut archive, name)?;
        info.title = element(&xml, "Title");
        info.series = element(&xml, "Series");
        info.number = element(&xml, "Number");
        info.author = element(&xml, "Writer");
        info.date = element(&xml, "Year");
        info.language = element(&xml, "LanguageISO");
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A minimal EPUB with `package` as its OPF.
    pub(crate) fn epub(path: &Path, package: &str) {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("mimetype", stored).unwrap();
        zip.write_all(b"application/epub+zip").unwrap();
        let deflated = zip::write::SimpleFileOptions::default();
        zip.start_file("META-INF/container.xml", deflated).unwrap();
        zip.write_all(br#"<?xml version="1.0"?><container><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#).unwrap();
        zip.start_file("OEBPS/content.opf", deflated).unwrap();
        zip.write_all(package.as_bytes()).unwrap();
        zip.finish().unwrap();
    }

    #[test]
    fn reads_the_package_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.epub");
        epub(
            &path,
            r#"<package><metadata><dc:title id="t">Le Petit Prince</dc:title><dc:creator>Antoine de Saint-Exup&#233;ry</dc:creator><dc:date>1943</dc:date><dc:language>fr</dc:language></metadata></package>"#,
        );
        let info = read_epub(&path).unwrap();
        assert_eq!(info.title.as_deref(), Some("Le Petit Prince"));
        assert_eq!(info.date.as_deref(), Some("1943"));
        assert_eq!(info.language.as_deref(), Some("fr"));
        std::fs::write(&path, b"not a zip").unwrap();
        assert!(read_epub(&path).unwrap_err().contains("not an EPUB"));
    }

    #[test]
    fn pdf_dates() {
        assert_eq!(pdf_date("D:20210615143005+02'00'").as_deref(), Some("2021-06-15"));
        assert_eq!(pdf_date("D:1999").as_deref(), Some("1999"));
        assert_eq!(pdf_date("yesterday"), None);
    }

    #[test]
    fn reads_comic_info_and_counts_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("comic.cbz");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        for page in ["001.jpg", "002.jpg", "003.png"] {
            zip.start_file(page, options).unwrap();
            zip.write_all(b"image").unwrap();
        }
        zip.start_file("ComicInfo.xml", options).unwrap();
        zip.write_all(b"<ComicInfo><Title>The Start</Title><Series>Saga</Series><Number>1</Number><Writer>B. K. Vaughan</Writer><Year>2012</Year></ComicInfo>").unwrap();
        zip.finish().unwrap();
        let info = read_cbz(&path).unwrap();
        assert_eq!(info.pages, Some(3));
        assert_eq!(info.title.as_deref(), Some("The Start"));
        assert_eq!(info.series.as_deref(), Some("Saga"));
        assert_eq!(info.author.as_deref(), Some("B. K. Vaughan"));
    }
}
