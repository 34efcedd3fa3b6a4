//! The operator's walkthrough of `docs/operations.md`, replayed on
//! loopback with real processes: a single node, two more joined with
//! tokens, one removed, a file tiered to a cold folder, then the cluster
//! backed up while stopped into owner-only archives and restored from them
//! into new directories (a new host), as the guide's commands say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Node, wait_until};
use common::http_raw;
use serde_json::Value;

fn voters(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|member| member["role"] == "voter")
        .map(|member| member["id"].as_u64().unwrap())
        .collect()
}

/// The user names node `node` serves, as the administrator sees them.
fn users(node: &Node) -> Vec<String> {
    let (code, _, body) = http_raw(
        node.http_port,
        "POST",
        "/api/v1/auth/login",
        "Content-Type: application/json\r\n",
        br#"{"username":"admin","password":"admin-password"}"#,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let login: Value = serde_json::from_slice(&body).unwrap();
    let token = login["access_token"].as_str().unwrap();
    let (code, _, body) = http_raw(
        node.http_port,
        "GET",
        "/api/v1/users",
        &format!("Authorization: Bearer {token}\r\n"),
        b"",
    );
    assert_eq!(code, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn ready(node: &Node) {
    wait_until(Duration::from_secs(20), || node.get("/readyz").0 == 200, || node.log());
}

/// `sh -c script`, as the guide's commands are typed.
fn shell(script: &str) {
    let output = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `omega ARGS` on `node`'s data directory; its stdout, asserting success.
fn omega_ok(node: &Node, args: &[&str]) -> String {
    let output = common::omega(&node.dir, args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `node` moved to `dir` (a new host), at the same addresses.
fn moved(node: &Node, dir: &Path) -> Node {
    Node {
        dir: dir.to_path_buf(),
        port: node.port,
        http_port: node.http_port,
        child: None,
    }
}

#[test]
fn single_node_add_two_remove_one_tier_back_up_and_restore_on_a_new_host() {
    let root = tempfile::tempdir().unwrap();
    let srv = root.path();
    let config = srv.join("omega.toml");
    std::fs::write(&config, "").unwrap();
    let a_config = srv.join("omega-a.toml");
    let cold = srv.join("cold-a");
    std::fs::write(
        &a_config,
        format!(
            "[store]\nhot_bytes_max = \"1MiB\"\ncold_url = \"file://{}\"\n",
            cold.display()
        ),
    )
    .unwrap();
    let mut a = Node::new(srv, "omega-a");
    let mut b = Node::new(srv, "omega-b");
    let mut c = Node::new(srv, "omega-c");

    // 1. A single node: a cluster of one, with the first administrator and
    // a cold tier.
    a.start_with(&a_config, None, &[], true);
    ready(&a);
    assert!(a.add_user("alice").status.success());

    // 2. Two more nodes join with tokens from `omega cluster token`.
    let token = a.token();
    b.start(&config, Some((&a, &token)));
    let token = a.token();
    c.start(&config, Some((&a, &token)));
    wait_until(
        Duration::from_secs(20),
        || voters(&a.status()).len() == 3,
        || a.status().to_string(),
    );
    ready(&b);
    ready(&c);
    assert_eq!(users(&c), ["admin", "alice"], "the new member has the catalog");

    // 3. One is removed by the id it reports (`cluster status --json` on
    // it); it stops by itself, and its directory is deleted.
    let c_id = c.status()["node_id"].as_u64().unwrap();
    omega_ok(&a, &["cluster", "remove", &c_id.to_string()]);
    let mut child = c.child.take().unwrap();
    wait_until(
        Duration::from_secs(15),
        || child.try_wait().unwrap().is_some(),
        || c.log(),
    );
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.code(), Some(78), "{status:?} {:?}: {}", status.signal(), c.log());
    std::fs::remove_dir_all(&c.dir).unwrap();
    wait_until(
        Duration::from_secs(20),
        || voters(&a.status()) == voters(&b.status()) && voters(&a.status()).len() == 2,
        || a.status().to_string(),
    );

    // 4. Tiering: an ingested file goes to the cold folder and reads back.
    let file = srv.join("some-file");
    let bytes: Vec<u8> = (0..3_000_000_u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let blob = omega_ok(&a, &["store", "ingest", file.to_str().unwrap()]);
    let blob = blob.split_whitespace().next().unwrap().to_owned();
    let report: Value = serde_json::from_str(&omega_ok(&a, &["store", "tier", "run", "--json"])).unwrap();
    assert!(report["demoted_packs"].as_u64().unwrap() > 0, "{report}");
    assert!(std::fs::read_dir(&cold).is_ok_and(|mut entries| entries.next().is_some()));
    let scrub: Value = serde_json::from_str(&omega_ok(&a, &["store", "scrub", "--json"])).unwrap();
    assert!(
        scrub["findings"].as_array().unwrap().is_empty() && scrub["io_errors"].as_array().unwrap().is_empty(),
        "{scrub}"
    );
    let output = common::omega(&a.dir, &["store", "cat", &blob]);
    assert!(output.stdout == bytes, "the tiered file reads back different bytes");

    // 5. Backup: both members stopped, each archived owner-only.
    a.stop();
    b.stop();
    let backup = srv.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for name in ["omega-a", "omega-b"] {
        shell(&format!(
            "(umask 077; tar --numeric-owner -C {} -czf {}/{name}.tgz {name})",
            srv.display(),
            backup.display()
        ));
        let mode = std::fs::metadata(backup.join(format!("{name}.tgz")))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o077, 0, "{name}.tgz is readable by others");
    }
    a.start(&a_config, None);
    b.start(&config, None);
    ready(&a);
    ready(&b);
    assert!(a.add_user("bob").status.success(), "written after the backup");
    wait_until(
        Duration::from_secs(20),
        || users(&b) == ["admin", "alice", "bob"],
        || b.log(),
    );

    // 6. Restore on a new host: the archives unpacked into new directories,
    // owned by the user that runs omega, started at the same addresses.
    a.stop();
    b.stop();
    let new_host = srv.join("new");
    shell(&format!(
        "mkdir -p {new} && tar --numeric-owner -C {new} -xzf {backup}/omega-a.tgz && \
         tar --numeric-owner -C {new} -xzf {backup}/omega-b.tgz && \
         chown -R $(id -u):$(id -g) {new}/omega-a {new}/omega-b",
        new = new_host.display(),
        backup = backup.display()
    ));
    let mut a = moved(&a, &new_host.join("omega-a"));
    let mut b = moved(&b, &new_host.join("omega-b"));
    a.start(&a_config, None);
    b.start(&config, None);
    ready(&a);
    ready(&b);
    assert_eq!(users(&a), ["admin", "alice"]);
    assert_eq!(users(&b), ["admin", "alice"]);
    assert_eq!(voters(&a.status()).len(), 2);
    assert!(
        a.add_user("carol").status.success(),
        "the restored cluster takes writes"
    );
    let output = common::omega(&a.dir, &["store", "cat", &blob]);
    assert!(output.stdout == bytes, "the restored node reads the tiered file");
}
