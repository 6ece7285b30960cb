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
