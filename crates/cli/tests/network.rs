//! End-to-end tests of the `butterfly` commands that go to the network, against the reference PLC
//! and PDS (`../shared/peers`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_testnet::TestNetwork;
use serde_json::Value as Json;
use std::process::{Command, Output};

fn butterfly(args: &[&str], allow_private: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_butterfly"));
    command
        .args(args)
        .env_remove("BUTTERFLY_ALLOW_PRIVATE_NETWORK");
    if allow_private {
        command.env("BUTTERFLY_ALLOW_PRIVATE_NETWORK", "1");
    }
    command.output().unwrap()
}

/// A plain HTTP/1.0 GET of a `http://localhost:PORT/path` URL; the body of a 200 answer.
fn http_get(url: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    response[split + 4..].to_vec()
}

fn json_ok(args: &[&str]) -> Json {
    let output = butterfly(args, true);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn resolve_prints_the_documented_json_for_every_seeded_account() {
    let network = TestNetwork::start();
    let plc_key = |did: &str| -> String {
        let data = json_ok(&[
            "resolve",
            did,
            "--plc",
            &network.plc,
            "--handle-resolver",
            &network.pds,
            "--json",
        ]);
        data["signing_key"].as_str().unwrap().to_owned()
    };
    for account in &network.accounts {
        for identifier in [&account.handle, &account.did] {
            let out = json_ok(&[
                "resolve",
                identifier,
                "--plc",
                &network.plc,
                "--handle-resolver",
                &network.pds,
                "--json",
            ]);
            let keys: Vec<&str> = out
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                [
                    "did",
                    "handle",
                    "handle_verified",
                    "pds",
                    "signing_key",
                    "doc"
                ]
            );
            assert_eq!(out["did"], account.did.as_str());
            assert_eq!(out["handle"], account.handle.as_str());
            assert_eq!(out["handle_verified"], true);
            assert_eq!(out["pds"], network.pds.as_str());
            assert!(out["signing_key"]
                .as_str()
                .unwrap()
                .starts_with("did:key:z"));
            assert_eq!(out["doc"]["id"], account.did.as_str());
        }
        assert_eq!(plc_key(&account.did), plc_key(&account.handle));
        // The same identity when built from the verified audit log instead of the directory.
        let audited = json_ok(&[
            "resolve",
            &account.did,
            "--plc",
            &network.plc,
            "--handle-resolver",
            &network.pds,
            "--verify-plc-audit",
            "--json",
        ]);
        assert_eq!(audited["handle_verified"], true);
        assert_eq!(audited["signing_key"], plc_key(&account.did).as_str());
        assert_eq!(audited["pds"], network.pds.as_str());
    }

    // Without permission for private addresses, the local network is out of reach: exit 2, one line.
    let alice = network.account("alice");
    let refused = butterfly(
        &["resolve", &alice.did, "--plc", &network.plc, "--json"],
        false,
    );
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not a public address"), "{stderr}");
    assert!(refused.stdout.is_empty());

    // The flag does the same as the environment variable.
    let flagged = butterfly(
        &[
            "resolve",
            &alice.did,
            "--plc",
            &network.plc,
            "--handle-resolver",
            &network.pds,
            "--allow-private-network",
        ],
        false,
    );
    assert!(flagged.status.success());
    assert!(String::from_utf8_lossy(&flagged.stdout).contains("(verified both ways)"));

    // Unknown handles and DIDs are errors with exit code 2.
    for unknown in [
        "nobody.test",
        "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
        "not a handle",
    ] {
        let output = butterfly(
            &[
                "resolve",
                unknown,
                "--plc",
                &network.plc,
                "--handle-resolver",
                &network.pds,
            ],
            true,
        );
        assert_eq!(output.status.code(), Some(2), "{unknown}");
    }
}

#[test]
fn plc_audit_verifies_logs_from_the_directory_and_from_files() {
    let network = TestNetwork::start();
    let dir = tempfile::tempdir().unwrap();
    for account in &network.accounts {
        let out = json_ok(&[
            "plc",
            "audit",
            &account.did,
            "--plc",
            &network.plc,
            "--json",
        ]);
        let keys: Vec<&str> = out
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "did",
                "valid",
                "error",
                "handle",
                "pds",
                "signing_key",
                "ops",
                "nullified"
            ]
        );
        assert_eq!(out["did"], account.did.as_str());
        assert_eq!(out["valid"], true);
        assert_eq!(out["error"], Json::Null);
        assert_eq!(out["handle"], account.handle.as_str());
        assert_eq!(out["pds"], network.pds.as_str());
        assert_eq!(out["ops"], 1);
        assert_eq!(out["nullified"], 0);
        let resolved = json_ok(&[
            "resolve",
            &account.did,
            "--plc",
            &network.plc,
            "--handle-resolver",
            &network.pds,
            "--json",
        ]);
        assert_eq!(out["signing_key"], resolved["signing_key"]);
    }

    // The same log saved to a file verifies offline; a tampered copy does not (exit 1).
    let alice = network.account("alice");
    let log = http_get(&format!("{}/{}/log/audit", network.plc, alice.did));
    let saved = dir.path().join("alice.json");
    std::fs::write(&saved, &log).unwrap();
    let offline = butterfly(
        &["plc", "audit", "--log", saved.to_str().unwrap(), "--json"],
        false,
    );
    assert!(offline.status.success());
    let offline: Json = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(offline["valid"], true);
    assert_eq!(offline["did"], alice.did.as_str());

    let tampered_text = String::from_utf8(log)
        .unwrap()
        .replace("at://alice.test", "at://mallory.test");
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, tampered_text).unwrap();
    let output = butterfly(
        &[
            "plc",
            "audit",
            "--log",
            tampered.to_str().unwrap(),
            "--json",
        ],
        false,
    );
    assert_eq!(output.status.code(), Some(1));
    let report: Json = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(
        report["error"].as_str().unwrap().contains("cid"),
        "{report}"
    );
    assert_eq!(report["handle"], Json::Null);
}
