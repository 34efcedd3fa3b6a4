//! Fetching a blob from the member that holds it, over its internal HTTP
//! routes, checking every chunk against the BLAKE3 name in the manifest and
//! the whole against the blob id before the file is used. Until the P2P
//! data plane exists, this is how a worker gets a source it does not hold.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

use crate::api::internal::{Manifest, NODE_HEADER};

/// Bytes asked for per request (whole chunks, at most this much).
const REQUEST_BYTES: u64 = 8 << 20;

/// The manifest of blob `blob` (hex) from the member at `http_addr`,
/// checked to tile the blob; `token` is this node's node token.
pub async fn blob_manifest(http_addr: &str, token: &str, blob: &str) -> anyhow::Result<Manifest> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let base = format!("http://{http_addr}/api/v1/internal/blobs/{blob}");
    let manifest = get_manifest(&client, &base, token, http_addr).await?;
    check_manifest(&manifest).with_context(|| format!("{http_addr} sent a bad manifest for {blob}"))?;
    Ok(manifest)
}

async fn get_manifest(client: &reqwest::Client, base: &str, token: &str, http_addr: &str) -> anyhow::Result<Manifest> {
    get_json(client, &format!("{base}/manifest"), token, http_addr).await
}

/// GETs `url` on member `http_addr` with this node's token; its JSON.
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    http_addr: &str,
) -> anyhow::Result<T> {
    Ok(client
        .get(url)
        .header(NODE_HEADER, token)
        .send()
        .await
        .with_context(|| format!("cannot reach {http_addr}"))?
        .error_for_status()?
        .json()
        .await?)
}

/// The signed manifest of `item`'s `rendition` segment set from the member
/// at `http_addr` (the one holding the file), for `peer`.
pub async fn set_manifest(
    http_addr: &str,
    token: &str,
    item: u64,
    rendition: &str,
    peer: &omega_p2p::PeerId,
) -> anyhow::Result<omega_p2p::Manifest> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = format!("http://{http_addr}/api/v1/internal/items/{item}/sets/{rendition}?peer={peer}");
    get_json(&client, &url, token, http_addr).await
}

/// Downloads blob `blob` (hex) from the member at `http_addr` into `dest`,
/// verified; `token` is this node's node token.
pub async fn fetch_blob(http_addr: &str, token: &str, blob: &str, dest: &Path) -> anyhow::Result<u64> {
    // The request id of whatever asked for this (or one naming the fetch),
    // so that the holder's logs show the same id as ours.
    let request_id =
        crate::telemetry::current_request_id().unwrap_or_else(|| format!("fetch-{}", blob.get(..12).unwrap_or(blob)));
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_str(&request_id) {
        headers.insert(crate::telemetry::REQUEST_ID_HEADER, value);
    }
    tracing::info!(%request_id, %http_addr, %blob, "fetching a blob from its holder");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .default_headers(headers)
        .build()?;
    let base = format!("http://{http_addr}/api/v1/internal/blobs/{blob}");
    let manifest = get_manifest(&client, &base, token, http_addr).await?;
    check_manifest(&manifest).with_context(|| format!("{http_addr} sent a bad manifest for {blob}"))?;
    let partial = dest.with_extension("partial");
    let mut file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut whole = blake3::Hasher::new();
    let mut written = 0_u64;
    let mut next = 0;
    while next < manifest.chunks.len() {
        // A run of whole chunks up to the request size.
        let first = &manifest.chunks[next];
        let mut last = next;
        while last + 1 < manifest.chunks.len()
            && manifest.chunks[last + 1].offset + u64::from(manifest.chunks[last + 1].len) - first.offset
                <= REQUEST_BYTES
        {
            last += 1;
        }
        let end = manifest.chunks[last].offset + u64::from(manifest.chunks[last].len);
        let bytes = client
            .get(format!("{base}?start={}&end={end}", first.offset))
            .header(NODE_HEADER, token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        if bytes.len() as u64 != end - first.offset {
            bail!(
                "{http_addr} sent {} bytes for {} asked",
                bytes.len(),
                end - first.offset
            );
        }
        for chunk in &manifest.chunks[next..=last] {
            let from = (chunk.offset - first.offset) as usize;
            let piece = &bytes[from..from + chunk.len as usize];
            if blake3::hash(piece).to_hex().as_str() != chunk.hash {
                bail!("{http_addr} sent a corrupt chunk at byte {} of {blob}", chunk.offset);
            }
        }
        whole.update(&bytes);
        file.write_all(&bytes)?;
        written += bytes.len() as u64;
        next = last + 1;
    }
    if written != manifest.size || whole.finalize().to_hex().as_str() != blob {
        bail!("the bytes from {http_addr} do not hash to {blob}");
    }
    file.sync_all()?;
    std::fs::rename(&partial, dest)?;
    Ok(written)
}

/// A manifest is trusted for nothing but its hashes: its chunks must tile
/// the blob from 0, each small enough for one request.
fn check_manifest(manifest: &Manifest) -> anyhow::Result<()> {
    let mut expected = 0_u64;
    for chunk in &manifest.chunks {
        if chunk.offset != expected || chunk.len == 0 || u64::from(chunk.len) > REQUEST_BYTES {
            bail!("chunk at {} does not follow byte {expected}", chunk.offset);
        }
        expected = expected
            .checked_add(u64::from(chunk.len))
            .context("chunk offsets overflow")?;
    }
    if expected != manifest.size {
        bail!("chunks cover {expected} bytes of {}", manifest.size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::internal::ManifestChunk;

    fn chunk(offset: u64, len: u32) -> ManifestChunk {
        ManifestChunk {
            offset,
            len,
            hash: String::new(),
        }
    }

    #[test]
    fn manifests_must_tile_the_blob() {
        let good = Manifest {
            size: 30,
            chunks: vec![chunk(0, 10), chunk(10, 20)],
        };
        assert!(check_manifest(&good).is_ok());
        for chunks in [vec![chunk(0, 10), chunk(5, 25)], vec![chunk(1, 29)], vec![chunk(0, 10)]] {
            assert!(check_manifest(&Manifest { size: 30, chunks }).is_err());
        }
        let huge = Manifest {
            size: u64::MAX,
            chunks: vec![chunk(0, u32::MAX)],
        };
        assert!(check_manifest(&huge).is_err());
    }
}
