//! E-book metadata: an EPUB's package document (title, author, date,
//! language), found through `META-INF/container.xml`.

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
    })
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
}
