//! Accepting HTTP connections within bounds, so that a slow or hostile
//! client cannot exhaust the node's file descriptors: a deadline for a
//! request's headers (hyper's header read timeout, which needs a timer that
//! `axum::serve` does not set), and caps on open connections in total and
//! per client address. A connection over a cap is closed at once; a
//! configured trusted proxy is exempt from the per-address cap, since every
//! client behind it shares its address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::zero_copy::ZeroCopyStream;

/// The bounds of the HTTP listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// Connections open at once, in total.
    pub connections_max: usize,
    /// Connections open at once from one address.
    pub per_address_max: usize,
    /// Addresses exempt from the per-address cap (`[http] trusted_proxies`).
    pub trusted_proxies: Arc<[IpNet]>,
}

/// Pause after a failed accept (out of file descriptors), so that the loop
/// does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Open connections per address; an entry goes when its last connection
/// closes, so the map holds at most as many entries as open connections.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address, until dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    fn take(table: &Arc<PerAddress>, address: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = table.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: table.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// What a connection holds while it is open.
struct Admission {
    _total: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
}

/// Serves `app` on `listener` until the task is dropped. Handlers see the
/// peer's address as `ConnectInfo<SocketAddr>`, as with `axum::serve`.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let total = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(admission) = admit(&total, &per_address, &limits, peer.ip()) else {
            // Dropping the stream closes it.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _admission = admission;
            metrics::gauge!("omega_http_connections").increment(1.0);
            let (stream, zero_copy) = ZeroCopyStream::new(stream);
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(zero_copy.clone());
                app.clone().oneshot(request)
            });
            // writev: body buffers reach the stream as they are, which
            // zero-copy file bodies rely on (see crate::zero_copy).
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .writev(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
            metrics::gauge!("omega_http_connections").decrement(1.0);
        });
    }
}

/// A place for a connection from `address`, or `None` when a cap is reached
/// (counted in `omega_http_connections_refused_total{reason}`).
fn admit(total: &Arc<Semaphore>, per_address: &Arc<PerAddress>, limits: &Limits, address: IpAddr) -> Option<Admission> {
    let Ok(permit) = total.clone().try_acquire_owned() else {
        metrics::counter!("omega_http_connections_refused_total", "reason" => "total").increment(1);
        return None;
    };
    let address = address.to_canonical();
    let slot = if crate::client_addr::is_trusted(&limits.trusted_proxies, &address) {
        None
    } else {
        match PerAddress::take(per_address, address, limits.per_address_max) {
            Some(slot) => Some(slot),
            None => {
                metrics::counter!("omega_http_connections_refused_total", "reason" => "address").increment(1);
                return None;
            }
        }
    };
    Some(Admission {
        _total: permit,
        _address: slot,
    })
}

/// Raises the soft limit on open files to the hard limit (as nginx and Go
/// programs do) and returns it: a media server holds many sockets and files.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed by
    // pointer, which lives on this stack frame for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// Connections allowed in total when the process may open `open_files`:
/// half of them, leaving the rest to media files, RocksDB, QUIC and ffmpeg,
/// between 64 and 16,384.
pub fn connections_for(open_files: u64) -> usize {
    usize::try_from(open_files / 2).unwrap_or(usize::MAX).clamp(64, 16_384)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_slots_are_counted_and_given_back() {
        let table = Arc::new(PerAddress::default());
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let first = PerAddress::take(&table, address, 2).unwrap();
        let second = PerAddress::take(&table, address, 2).unwrap();
        assert!(PerAddress::take(&table, address, 2).is_none());
        assert!(PerAddress::take(&table, "192.0.2.2".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(PerAddress::take(&table, address, 2).is_some());
        drop(second);
        // Entries go with their last connection.
        assert!(table.0.lock().unwrap().is_empty());
        assert_eq!(connections_for(1024), 512);
        assert_eq!(connections_for(10), 64);
        assert_eq!(connections_for(1 << 20), 16_384);
    }
}
