//! Generated books: an EPUB, a PDF and a CBZ with their metadata, for the
//! tests of the catalog and of OPDS.

use std::io::Write;
use std::path::Path;

use super::ffmpeg;

/// A one-page PDF whose Info dictionary names its title, author and date.
pub fn pdf(path: &Path) {
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>".to_owned(),
        "<< /Title (A Field Guide to Clouds) /Author (Jo Weather) /CreationDate (D:20190304120000Z) >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{object}\nendobj\n", index + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    std::fs::write(path, out).unwrap();
}

pub fn zip_file(path: &Path, members: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// `petit-prince.epub`, `clouds.pdf` and `saga-001.cbz` under `root`.
pub fn books(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    zip_file(
        &root.join("petit-prince.epub"),
        &[
            ("mimetype", b"application/epub+zip"),
            (
                "META-INF/container.xml",
                br#"<?xml version="1.0"?><container><rootfiles><rootfile full-path="content.opf"/></rootfiles></container>"#,
            ),
            (
                "content.opf",
                br#"<package><metadata><dc:title>Le Petit Prince</dc:title><dc:creator>Antoine de Saint-Exupery</dc:creator><dc:date>1943-04-06</dc:date><dc:language>fr</dc:language></metadata></package>"#,
            ),
        ],
    );
    pdf(&root.join("clouds.pdf"));
    let page = root.join("page.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x96:rate=1",
        "-frames:v",
        "1",
        page.to_str().unwrap(),
    ]);
    let page_bytes = std::fs::read(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    zip_file(
        &root.join("saga-001.cbz"),
        &[
            ("001.jpg", &page_bytes),
            ("002.jpg", &page_bytes),
            (
                "ComicInfo.xml",
                b"<ComicInfo><Title>Chapter One</Title><Series>Saga</Series><Number>1</Number><Writer>B. K. Vaughan</Writer><Year>2012</Year></ComicInfo>",
            ),
        ],
    );
}
