//! Signature verification: the fast path (libsecp256k1, ring) beside the pure-Rust RustCrypto
//! path, on the same key, message and signature, in one group.

use std::hint::black_box;

use butterfly_crypto::{
    Algorithm, FastVerifier, PrivateKey, RustCryptoVerifier, SignatureVerifier,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn verify(c: &mut Criterion) {
    // A commit-sized message: the CBOR of an unsigned repo commit is about this long.
    let message = vec![0xa5u8; 180];
    let mut group = c.benchmark_group("verify");
    for algorithm in [Algorithm::K256, Algorithm::P256] {
        let private_key = PrivateKey::from_bytes(algorithm, &[0x5a; 32]).expect("valid scalar");
        let signature = private_key.sign(&message);
        let public_key = private_key.public_key().clone();
        let verifiers: [(&str, &dyn SignatureVerifier); 2] =
            [("fast", &FastVerifier), ("rustcrypto", &RustCryptoVerifier)];
        for (name, verifier) in verifiers {
            verifier
                .verify(&public_key, &message, &signature)
                .expect("own signature verifies");
            let id = format!("{}/{name}", algorithm.jwt_name());
            group.bench_function(id, |bencher| {
                bencher.iter(|| {
                    verifier.verify(
                        black_box(&public_key),
                        black_box(&message),
                        black_box(&signature),
                    )
                })
            });
        }
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_did_key");
    for algorithm in [Algorithm::K256, Algorithm::P256] {
        let private_key = PrivateKey::from_bytes(algorithm, &[0x5a; 32]).expect("valid scalar");
        let did_key = private_key.public_key().to_did_key();
        group.bench_function(algorithm.jwt_name(), |bencher| {
            bencher.iter(|| butterfly_crypto::PublicKey::parse_did_key(black_box(&did_key)))
        });
    }
    group.finish();
}

criterion_group!(benches, verify, parse);
criterion_main!(benches);
