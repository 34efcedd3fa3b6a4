//! Photo metadata from EXIF: when it was taken, the camera, and where (GPS).

use std::collections::BTreeMap;
use std::path::Path;

use exif::{In, Tag, Value};

/// EXIF entries of a photo as catalog metadata: `taken_at` (ISO 8601, local
/// time as the camera recorded it), `camera_make`, `camera_model`,
/// `latitude` and `longitude` (decimal degrees), `orientation`, and the
/// pixel size. An image without EXIF yields nothing; that is not an error.
pub fn read_exif(path: &Path) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else {
        return metadata;
    };
    let mut reader = std::io::BufReader::new(file);
    let Ok(exif) = exif::Reader::new().read_from_container(&mut reader) else {
        return metadata;
    };
    let text = |tag: Tag| -> Option<String> {
        let field = exif.get_field(tag, In::PRIMARY)?;
        match &field.value {
            Value::Ascii(parts) => {
                let joined: String = parts
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).trim_end_matches('\0').trim().to_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                let joined: String = joined.chars().take(256).collect();
                (!joined.is_empty()).then_some(joined)
            }
            _ => None,
        }
    };
    let number = |tag: Tag| -> Option<u32> { exif.get_field(tag, In::PRIMARY)?.value.get_uint(0) };
    let taken = text(Tag::DateTimeOriginal).or_else(|| text(Tag::DateTime));
    if let Some(taken) = taken.as_deref().and_then(iso_date_time) {
        metadata.insert("taken_at".into(), taken);
    }
    if let Some(make) = text(Tag::Make) {
        metadata.insert("camera_make".into(), make);
    }
    if let Some(model) = text(Tag::Model) {
        metadata.insert("camera_model".into(), model);
    }
    if let Some(orientation) = number(Tag::Orientation) {
        metadata.insert("orientation".into(), orientation.to_string());
    }
    if let (Some(width), Some(height)) = (number(Tag::PixelXDimension), number(Tag::PixelYDimension)) {
        metadata.insert("width".into(), width.to_string());
        metadata.insert("height".into(), height.to_string());
    }
    let coordinate = |value: Tag, reference: Tag, negative: &str| -> Option<f64> {
        let field = exif.get_field(value, In::PRIMARY)?;
        let Value::Rational(parts) = &field.value else {
            return None;
        };
        let degrees = parts.first()?.to_f64()
            + parts.get(1).map_or(0.0, |minutes| minutes.to_f64() / 60.0)
            + parts.get(2).map_or(0.0, |seconds| seconds.to_f64() / 3600.0);
        if !degrees.is_finite() {
            return None;
        }
        let sign = if text(reference).as_deref() == Some(negative) {
            -1.0
        } else {
            1.0
        };
        Some(sign * degrees)
    };
    let latitude = coordinate(Tag::GPSLatitude, Tag::GPSLatitudeRef, "S").filter(|lat| lat.abs() <= 90.0);
    let longitude = coordinate(Tag::GPSLongitude, Tag::GPSLongitudeRef, "W").filter(|lon| lon.abs() <= 180.0);
    if let (Some(latitude), Some(longitude)) = (latitude, longitude) {
        metadata.insert("latitude".into(), format!("{latitude:.6}"));
        metadata.insert("longitude".into(), format!("{longitude:.6}"));
    }
    metadata
}

/// `2021:06:15 14:30:05` (EXIF) as `2021-06-15T14:30:05`; `None` when it is
/// not a date (cameras write blanks or zeros when unset).
fn iso_date_time(exif: &str) -> Option<String> {
    let (date, time) = exif.trim().split_once(' ')?;
    let date: Vec<&str> = date.split(':').collect();
    let time: Vec<&str> = time.split(':').collect();
    let numeric = |parts: &[&str], lengths: &[usize]| {
        parts.len() == lengths.len()
            && parts
                .iter()
                .zip(lengths)
                .all(|(part, len)| part.len() == *len && part.bytes().all(|byte| byte.is_ascii_digit()))
    };
    if !numeric(&date, &[4, 2, 2]) || !numeric(&time, &[2, 2, 2]) || date[0] == "0000" {
        return None;
    }
    Some(format!(
        "{}-{}-{}T{}:{}:{}",
        date[0], date[1], date[2], time[0], time[1], time[2]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exif_dates() {
        assert_eq!(
            iso_date_time("2021:06:15 14:30:05").as_deref(),
            Some("2021-06-15T14:30:05")
        );
        assert_eq!(iso_date_time("0000:00:00 00:00:00"), None);
        assert_eq!(iso_date_time("    :  :     :  :  "), None);
        assert_eq!(iso_date_time("2021-06-15"), None);
    }

    #[test]
    fn images_without_exif_have_no_metadata() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("x.jpg");
        std::fs::write(&path, b"\xff\xd8\xff\xd9").unwrap_or_else(|error| panic!("{error}"));
        assert!(read_exif(&path).is_empty());
        assert!(read_exif(&dir.path().join("missing.jpg")).is_empty());
    }
}
