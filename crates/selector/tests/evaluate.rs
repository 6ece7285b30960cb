//! Evaluating selectors over small hand-made graphs: which repo gets which tags.
#![allow(clippy::unwrap_used)]

use butterfly_selector::{evaluate, EdgeMap, Inputs, Membership, Selector, WalkKey};
use std::collections::{HashMap, HashSet};

/// A short DID for a name, so that graphs read easily.
fn did(name: &str) -> String {
    format!("did:plc:{name}")
}

/// A graph: (from, [to...]) pairs, all under one walk key.
type Graph<'a> = &'a [(&'a str, &'a [&'a str])];

fn edges_for(selector: &Selector, graphs: &[(usize, Graph<'_>)]) -> EdgeMap {
    let keys = selector.walk_keys();
    let mut edges = EdgeMap::new();
    for (key_idx, graph) in graphs {
        for (from, targets) in *graph {
            edges.add(
                &did(from),
                &keys[*key_idx],
                targets.iter().map(|name| did(name)),
            );
        }
    }
    edges
}

fn run(selector: &Selector, seeds: &[(usize, &[&str])], edges: &EdgeMap) -> Membership {
    let seeds: HashMap<usize, Vec<String>> = seeds
        .iter()
        .map(|(clause, names)| (*clause, names.iter().map(|name| did(name)).collect()))
        .collect();
    evaluate(
        selector,
        &Inputs {
            seeds: &seeds,
            edges,
            pinned: &Default::default(),
            excluded: &Default::default(),
        },
    )
}

/// Checks that evaluating `document` gives each named repo exactly these tags, and no other repo
/// any tag. `graphs` gives edges per walk key, by index into `walk_keys()`.
fn check(
    document: &str,
    seeds: &[(usize, &[&str])],
    graphs: &[(usize, Graph<'_>)],
    expected: &[(&str, &[&str])],
) -> Membership {
    let selector = Selector::from_json(document).unwrap();
    let edges = edges_for(&selector, graphs);
    let membership = run(&selector, seeds, &edges);
    let found: Vec<(String, Vec<String>)> = membership
        .iter()
        .map(|(did, tags)| (did.to_owned(), tags.to_vec()))
        .collect();
    let mut wanted: Vec<(String, Vec<String>)> = expected
        .iter()
        .map(|(name, tags)| (did(name), tags.iter().map(|t| t.to_string()).collect()))
        .collect();
    wanted.sort();
    assert_eq!(found, wanted);
    assert_eq!(membership.len(), expected.len());
    membership
}

/// The example from the design (shared with `document.rs`).
const EXAMPLE: &str = include_str!("data/example.json");

#[test]
fn the_example_over_a_small_graph() {
    let follows: Graph<'_> = &[
        ("alice", &["bob", "carol"]),
        ("bob", &["dave", "alice", "dave"]),
        ("carol", &["erin"]),
        ("dave", &["frank"]),
        ("zed", &["alice"]),
    ];
    let membership = check(
        EXAMPLE,
        &[(0, &["alice"]), (3, &["p1", "bob", "p2"])],
        &[(0, follows)],
        &[
            ("alice", &["k2", "me"]),
            ("bob", &["followed", "profiles"]),
            ("carol", &["followed"]),
            ("dave", &["k2"]),
            ("erin", &["k2"]),
            ("p1", &["profiles"]),
            ("p2", &["profiles"]),
        ],
    );
    assert_eq!(
        membership.members_of("followed"),
        [did("bob"), did("carol")]
    );
    assert!(membership.members_of("nobody").is_empty());
    assert!(membership.tags_of(&did("frank")).is_empty());
    assert!(membership.contains(&did("erin")) && !membership.contains(&did("zed")));
}

#[test]
fn unknown_seeds_give_nothing_yet() {
    // The handle is not resolved yet: only the service clause contributes.
    check(EXAMPLE, &[(3, &["p1"])], &[], &[("p1", &["profiles"])]);
    // Resolved, but no records read yet: the walks find nothing.
    check(EXAMPLE, &[(0, &["alice"])], &[], &[("alice", &["me"])]);
}

#[test]
fn clauses_of_a_tag_unite_and_aliases_copy() {
    check(
        r#"{"select": [
            {"where": {"repo": "did:plc:a"}, "tag": "seed"},
            {"where": {"repo": "did:plc:b"}, "tag": "seed"},
            {"where": {"service": "https://relay.example", "method": "com.atproto.sync.listRepos",
                       "attr": "repos.*.did", "max_repos": 2}, "tag": "seed"},
            {"where": {"repo": "seed"}, "tag": "all"},
            {"where": {"repo": "seed", "max_repos": 1}, "tag": "first"},
            {"where": {"repo": "seed", "collection": "app.bsky.graph.block", "attr": "subject"}, "tag": "all"}
        ]}"#,
        // Seeds as given, duplicates dropped, the first `max_repos` taken in their order.
        &[(0, &["a"]), (1, &["b"]), (2, &["z", "z", "a", "y"])],
        &[(0, &[("b", &["x"]), ("y", &["w"])])],
        &[
            ("a", &["all", "first", "seed"]),
            ("b", &["all", "seed"]),
            ("z", &["all", "seed"]),
            ("x", &["all"]),
        ],
    );
}

#[test]
fn one_hop_walks_cap_in_sorted_order() {
    check(
        r#"{"select": [
            {"where": {"repo": "did:plc:s"}, "tag": "s"},
            {"where": {"repo": "s", "collection": "app.bsky.graph.follow", "attr": "subject", "max_repos": 2}, "tag": "f"}
        ]}"#,
        &[(0, &["s"])],
        &[(0, &[("s", &["e", "c", "d", "a", "b"])])],
        &[("s", &["s"]), ("a", &["f"]), ("b", &["f"])],
    );
}

const CRAWL: &str = r#"{"select": [
    {"where": {"repo": "did:plc:a"}, "tag": "net"},
    {"where": {"repo": "net", "collection": "app.bsky.graph.follow", "attr": "subject"LIMITS}, "tag": "net"}
]}"#;

fn crawl(limits: &str) -> String {
    CRAWL.replace("LIMITS", limits)
}

#[test]
fn recursive_walks_crawl_breadth_first() {
    let chain: Graph<'_> = &[
        ("a", &["b"]),
        ("b", &["c", "a"]),
        ("c", &["d"]),
        ("d", &["e"]),
        ("e", &["a"]),
    ];
    let all: &[(&str, &[&str])] = &[
        ("a", &["net"]),
        ("b", &["net"]),
        ("c", &["net"]),
        ("d", &["net"]),
        ("e", &["net"]),
    ];
    // Unbounded: everything reachable, cycles included.
    check(&crawl(""), &[(0, &["a"])], &[(0, chain)], all);
    // Two hops from the starting set.
    check(
        &crawl(r#", "max_depth": 2"#),
        &[(0, &["a"])],
        &[(0, chain)],
        &all[..3],
    );
    check(
        &crawl(r#", "max_depth": 1"#),
        &[(0, &["a"])],
        &[(0, chain)],
        &all[..2],
    );

    // A wide fan: level one is sorted, then cut at `max_repos` new repos.
    let fan: Graph<'_> = &[
        ("a", &["x5", "x3", "x1", "x4", "x2"]),
        ("x1", &["y1"]),
        ("x2", &["y2"]),
    ];
    check(
        &crawl(r#", "max_repos": 3"#),
        &[(0, &["a"])],
        &[(0, fan)],
        &[
            ("a", &["net"]),
            ("x1", &["net"]),
            ("x2", &["net"]),
            ("x3", &["net"]),
        ],
    );
    check(
        &crawl(r#", "max_repos": 6"#),
        &[(0, &["a"])],
        &[(0, fan)],
        &[
            ("a", &["net"]),
            ("x1", &["net"]),
            ("x2", &["net"]),
            ("x3", &["net"]),
            ("x4", &["net"]),
            ("x5", &["net"]),
            ("y1", &["net"]),
        ],
    );
    // No seed yet, no crawl.
    check(&crawl(""), &[], &[(0, chain)], &[]);
}

#[test]
fn recursive_walks_of_one_tag_expand_together() {
    // Follows and blocks both spread the tag: c is reached only by a follow then a block.
    check(
        r#"{"select": [
            {"where": {"repo": "did:plc:a"}, "tag": "net"},
            {"where": {"repo": "net", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "net"},
            {"where": {"repo": "net", "collection": "app.bsky.graph.block", "attr": "subject", "max_depth": 2}, "tag": "net"},
            {"where": {"repo": "net", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "next"}
        ]}"#,
        &[(0, &["a"])],
        &[
            // Key 0 is app.bsky.graph.block, key 1 app.bsky.graph.follow (sorted).
            (0, &[("b", &["c"]), ("c", &["d"])]),
            (1, &[("a", &["b"]), ("c", &["e"]), ("e", &["out"])]),
        ],
        // d would be a third block hop, past that walk's depth; follows go on from c.
        &[
            ("a", &["net"]),
            ("b", &["net", "next"]),
            ("c", &["net"]),
            ("e", &["net", "next"]),
            ("out", &["net", "next"]),
        ],
    );
}

#[test]
fn evaluation_is_deterministic() {
    let document = crawl(r#", "max_repos": 40"#);
    let selector = Selector::from_json(&document).unwrap();
    let key: &WalkKey = &selector.walk_keys()[0];
    // The same graph, with each repo's targets listed in two different orders.
    let mut forward = EdgeMap::new();
    let mut backward = EdgeMap::new();
    for i in 0..200u32 {
        let targets: Vec<String> = (1..6)
            .map(|k| did(&format!("n{}", (i * 7 + k * 13) % 200)))
            .collect();
        let from = did(&format!("n{i}"));
        forward.add(&from, key, targets.iter().cloned());
        backward.add(&from, key, targets.into_iter().rev());
    }
    let seeds = HashMap::from([(0, vec![did("n0"), did("n1")])]);
    let first = evaluate(
        &selector,
        &Inputs {
            seeds: &seeds,
            edges: &forward,
            pinned: &Default::default(),
            excluded: &Default::default(),
        },
    );
    let second = evaluate(
        &selector,
        &Inputs {
            seeds: &seeds,
            edges: &backward,
            pinned: &Default::default(),
            excluded: &Default::default(),
        },
    );
    assert_eq!(first, second);
    // The seed did:plc:a has no edges here; n0 and n1 are seeds of clause 0 as given.
    assert_eq!(first.len(), 42);
}

#[test]
fn a_large_graph_is_handled() {
    // 20,000 repos with 10 follows each, crawled from one seed; with 100,000 and 1,000,000 edges
    // the release build takes a fraction of a second.
    let selector = Selector::from_json(&crawl("")).unwrap();
    let key = &selector.walk_keys()[0];
    let n = 20_000u64;
    let mut edges = EdgeMap::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        let targets: Vec<String> = (0..10)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                format!("did:plc:r{}", (state >> 33) % n)
            })
            .collect();
        edges.add(&format!("did:plc:r{i}"), key, targets);
    }
    let seeds = HashMap::from([(0, vec!["did:plc:r0".to_owned()])]);
    let membership = evaluate(
        &selector,
        &Inputs {
            seeds: &seeds,
            edges: &edges,
            pinned: &Default::default(),
            excluded: &Default::default(),
        },
    );
    // A random graph of out-degree 10 reaches nearly everything.
    assert!(membership.len() > 19_000, "{}", membership.len());
    assert_eq!(membership.members_of("net").len(), membership.len());
}

/// Repos pinned to a tag by hand are members, and walked from; excluded repos are in no tag and
/// never walked through.
#[test]
fn pinned_and_excluded_repos() {
    let document = r#"{
        "select": [
            {"where": {"repo": "did:plc:a"}, "tag": "me"},
            {"where": {"repo": "me", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "followed"},
            {"where": {"repo": "followed", "collection": "app.bsky.graph.follow", "attr": "subject", "max_depth": 3}, "tag": "followed"}
        ],
        "retain": {"me": {"*": "*"}, "followed": {"*": "*"}}
    }"#;
    let selector = Selector::from_json(document).unwrap();
    let graph: Graph<'_> = &[("a", &["b"]), ("b", &["c"]), ("c", &["d"]), ("p", &["q"])];
    let edges = edges_for(&selector, &[(0, graph)]);
    let seeds: HashMap<usize, Vec<String>> = [(0, vec![did("a")])].into();
    let pinned: HashMap<String, Vec<String>> = [("me".to_owned(), vec![did("p")])].into();
    let excluded: HashSet<String> = [did("c")].into();
    let membership = evaluate(
        &selector,
        &Inputs {
            seeds: &seeds,
            edges: &edges,
            pinned: &pinned,
            excluded: &excluded,
        },
    );
    let found: Vec<(String, Vec<String>)> = membership
        .iter()
        .map(|(did, tags)| (did.to_owned(), tags.to_vec()))
        .collect();
    assert_eq!(
        found,
        vec![
            (did("a"), vec!["me".to_owned()]),
            (did("b"), vec!["followed".to_owned()]),
            (did("p"), vec!["me".to_owned()]),
            (did("q"), vec!["followed".to_owned()]),
        ],
        "p is pinned and its follow q walked; c is excluded, so d is not reached through it"
    );
}
