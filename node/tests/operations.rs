//! The operator's walkthrough of `docs/operations.md`, replayed on
//! loopback with real processes: a single node, two more joined with
//! tokens, one removed, then the cluster backed up while stopped and
//! restored from that backup.
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

/// `cp -a from to`: the backup and the restore of a stopped node.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

#[test]
fn single_node_add_two_remove_one_back_up_and_restore() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("omega.toml");
    std::fs::write(&config, "").unwrap();
    let mut a = Node::new(root.path(), "a");
    let mut b = Node::new(root.path(), "b");
    let mut c = Node::new(root.path(), "c");

    // 1. A single node: a cluster of one, with the first administrator.
    a.start_with(&config, None, &[], true);
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

    // 3. One is removed (`omega cluster remove ID`), stopped and wiped.
    let c_id = c.status()["node_id"].as_u64().unwrap();
    let output = common::omega(&a.dir, &["cluster", "remove", &c_id.to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    c.stop();
    std::fs::remove_dir_all(&c.dir).unwrap();
    wait_until(
        Duration::from_secs(20),
        || voters(&a.status()) == voters(&b.status()) && voters(&a.status()).len() == 2,
        || a.status().to_string(),
    );

    // 4. Backup: both members stopped, each data directory copied.
    a.stop();
    b.stop();
    let backups = root.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    copy_tree(&a.dir, &backups.join("a"));
    copy_tree(&b.dir, &backups.join("b"));
    a.start(&config, None);
    b.start(&config, None);
    ready(&a);
    ready(&b);
    assert!(a.add_user("bob").status.success(), "written after the backup");
    wait_until(
        Duration::from_secs(20),
        || users(&b) == ["admin", "alice", "bob"],
        || b.log(),
    );

    // 5. Restore: both stopped, their directories replaced by the backup,
    // started again at the same addresses: the cluster is as backed up.
    a.stop();
    b.stop();
    for (node, name) in [(&a, "a"), (&b, "b")] {
        std::fs::remove_dir_all(&node.dir).unwrap();
        copy_tree(&backups.join(name), &node.dir);
    }
    a.start(&config, None);
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
}
