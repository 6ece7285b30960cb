//! Micro-benchmarks of the repo hot paths on a synthetic 10,000-record tree: CAR parsing with hash
//! checks, MST walk, node decoding, and sync 1.1 inversion of a small commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_data::{cid_for_cbor, Cid, Value};
use butterfly_repo::car::{write_car_to_vec, CarReader};
use butterfly_repo::mst::{self, Mst, NodeData};
use butterfly_repo::proof::{invert_ops, RepoOp};
use butterfly_repo::{BlockMap, RecordingSource};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N_RECORDS: u32 = 10_000;

fn record(n: u32) -> Vec<u8> {
    let mut map = butterfly_data::Map::new();
    map.insert("$type".into(), Value::String("app.bsky.feed.post".into()));
    map.insert(
        "text".into(),
        Value::String(format!("post number {n} with some words in it")),
    );
    map.insert(
        "createdAt".into(),
        Value::String("2024-01-01T00:00:00.000Z".into()),
    );
    Value::Map(map).to_cbor()
}

fn key(n: u32) -> String {
    format!("app.bsky.feed.post/3k{n:011}")
}

fn fixture() -> (Cid, BlockMap, Vec<u8>) {
    let mut blocks = BlockMap::new();
    let mut entries = Vec::new();
    for n in 0..N_RECORDS {
        let bytes = record(n);
        let cid = cid_for_cbor(&bytes);
        blocks.insert(cid, bytes);
        entries.push((key(n), cid));
    }
    let mut tree = Mst::from_sorted(entries).unwrap();
    let (root, nodes) = tree.new_blocks();
    blocks.extend(nodes);
    let car = write_car_to_vec(&[root], blocks.iter());
    (root, blocks, car)
}

fn benches(c: &mut Criterion) {
    let (root, mut blocks, car) = fixture();

    let mut group = c.benchmark_group("car");
    group.throughput(Throughput::Bytes(car.len() as u64));
    group.bench_function("read_and_verify_10k", |b| {
        b.iter(|| {
            CarReader::new(car.as_slice())
                .unwrap()
                .map(|block| block.unwrap().data.len())
                .sum::<usize>()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("mst");
    group.throughput(Throughput::Elements(u64::from(N_RECORDS)));
    group.bench_function("walk_10k", |b| {
        b.iter(|| mst::walk(root, &mut blocks).count())
    });
    let root_bytes = blocks.get(&root).unwrap().to_vec();
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_root_node", |b| {
        b.iter(|| NodeData::decode(&root, &root_bytes).unwrap())
    });

    // A three-op commit: create, update, delete; inverted on its own minimal proof.
    let mut tree = Mst::load(root, &mut blocks).unwrap();
    let new_cid = cid_for_cbor(&record(999_999));
    tree.insert(&key(N_RECORDS + 1), new_cid, &mut blocks)
        .unwrap();
    let old_5 = tree.insert(&key(5), new_cid, &mut blocks).unwrap();
    let old_7 = tree.remove(&key(7), &mut blocks).unwrap();
    let (new_root, nodes) = tree.new_blocks();
    blocks.extend(nodes);
    let ops = vec![
        RepoOp::Create {
            path: key(N_RECORDS + 1),
            cid: new_cid,
        },
        RepoOp::Update {
            path: key(5),
            cid: new_cid,
            prev: old_5,
        },
        RepoOp::Delete {
            path: key(7),
            prev: old_7,
        },
    ];
    let mut recorder = RecordingSource::new(&mut blocks);
    invert_ops(new_root, &ops, &mut recorder).unwrap();
    let needed = recorder.requested.clone();
    let mut proof = blocks.clone();
    proof.retain(&needed);
    group.bench_function("invert_3_op_commit", |b| {
        b.iter(|| invert_ops(new_root, &ops, &mut proof).unwrap())
    });
    group.finish();
}

criterion_group!(repo, benches);
criterion_main!(repo);
