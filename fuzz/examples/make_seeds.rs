//! Writes small seed inputs for the fuzz targets into `corpus/<target>/`.
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`. Built without fuzzing instrumentation.

use butterfly_crypto::{Algorithm, PrivateKey};
use butterfly_data::{cid_for_cbor, Value};
use butterfly_repo::car::write_car_to_vec;
use butterfly_repo::commit::UnsignedCommit;
use butterfly_repo::mst::Mst;
use butterfly_syntax::{Did, Tid};
use std::fs;
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn write(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn main() -> Result<()> {
    // Records.
    let records = [
        serde_json::json!({"$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2024-01-01T00:00:00Z"}),
        serde_json::json!({"$type": "app.bsky.actor.profile", "displayName": "Alice", "avatar": {
            "$type": "blob",
            "ref": {"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},
            "mimeType": "image/png",
            "size": 1234
        }}),
        serde_json::json!({"a": [1, -1, 23, 24, 255, 256, 65536, -4294967297_i64, null, true, false],
            "bytes": {"$bytes": "aGVsbG8"}, "nested": {"x": [{"y": [[]]}]}, "": ""}),
    ];
    for (i, json) in records.iter().enumerate() {
        write("record_links", &format!("record{i}"), json.to_string().as_bytes())?;
    }
    let post = "at://did:plc:r7tbmc5dwl4ajvvc2ubpfhwj/app.bsky.feed.post/3lbq5vmzq7s2k";
    let linking = [
        serde_json::json!({"$type": "app.bsky.feed.like", "subject": {"uri": post, "cid": "bafyreib2rxk3rh6kzwq7mcuxlpgmiopdcw2ylkcyvnjwghqjkqbuhvfjq4"}}),
        serde_json::json!({"$type": "app.bsky.graph.follow", "subject": "did:plc:r7tbmc5dwl4ajvvc2ubpfhwj"}),
        serde_json::json!({"text": "hi", "facets": [{"features": [{"did": "did:web:example.com"}, {"did": "did:web:example.com"}]}],
            "embed": {"record": {"uri": "at://alice.example.com/app.bsky.feed.post/3k"}}}),
    ];
    for (i, json) in linking.iter().enumerate() {
        write("record_links", &format!("links{i}"), json.to_string().as_bytes())?;
    }
    write("record_links", "escapes", br#"{"sub\u006aect":"did:plc:abc","k\"":"at:\/\/did:plc:abc"}"#)?;
    let mut record_blocks = Vec::new();
    for (i, json) in records.iter().enumerate() {
        let value = Value::from_json(json)?;
        let bytes = value.to_cbor();
        write("cbor", &format!("record{i}"), &bytes)?;
        record_blocks.push((cid_for_cbor(&bytes), bytes));
    }
    for (i, value) in [
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::String("é☃".into()),
        Value::Link(cid_for_cbor(b"\xa0")),
        Value::Array(vec![Value::Null, Value::Bytes(vec![0; 40])]),
    ]
    .iter()
    .enumerate()
    {
        write("cbor", &format!("scalar{i}"), &value.to_cbor())?;
    }

    // A tree with enough keys to have more than one layer.
    let mut keys: Vec<String> = (0..40)
        .map(|i| format!("app.bsky.feed.post/3k2a{i:03}"))
        .chain((0..10).map(|i| format!("app.bsky.feed.like/3k3b{i:03}")))
        .collect();
    keys.sort();
    let entries: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| (key.as_str(), record_blocks[i % record_blocks.len()].0))
        .collect();
    let mut tree = Mst::from_sorted(entries)?;
    let (root, node_blocks) = tree.new_blocks();
    for (i, (_, bytes)) in node_blocks.iter().enumerate() {
        write("mst_node", &format!("node{i}"), bytes)?;
        write("cbor", &format!("node{i}"), bytes)?;
    }
    let mut small = Mst::from_sorted([("com.example.a/self", record_blocks[0].0)])?;
    let (_, small_blocks) = small.new_blocks();
    for (i, (_, bytes)) in small_blocks.iter().enumerate() {
        write("mst_node", &format!("small{i}"), bytes)?;
    }
    write("mst_node", "empty", &[0xa2, 0x61, b'e', 0x80, 0x61, b'l', 0xf6])?;

    // A commit signed by the key the commit target checks against.
    let key = PrivateKey::from_bytes(Algorithm::K256, &[7u8; 32])?;
    let unsigned = UnsignedCommit {
        did: Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz")?,
        data: root,
        rev: Tid::parse("3jzfcijpj2z2a")?,
        prev: None,
    };
    let (commit_cid, commit_bytes) = unsigned.sign(&key);
    write("commit", "signed", &commit_bytes)?;
    write("cbor", "commit", &commit_bytes)?;

    // A whole repo CAR, and a small slice.
    let mut blocks: Vec<(&_, &[u8])> = vec![(&commit_cid, commit_bytes.as_slice())];
    blocks.extend(node_blocks.iter().map(|(c, b)| (c, b.as_slice())));
    blocks.extend(record_blocks.iter().map(|(c, b)| (c, b.as_slice())));
    write("car", "repo", &write_car_to_vec(&[commit_cid], blocks.iter().copied()))?;
    write(
        "car",
        "slice",
        &write_car_to_vec(&[commit_cid], blocks.iter().take(2).copied()),
    )?;
    write("car", "no_roots", &write_car_to_vec(&[], [(&record_blocks[0].0, record_blocks[0].1.as_slice())]))?;
    println!("seeds written under corpus/");
    Ok(())
}
