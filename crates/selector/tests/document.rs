//! Reading selector documents: what is accepted, what each problem says and where, and what the
//! retain section keeps.
#![allow(clippy::unwrap_used)]

use butterfly_selector::{Keep, Policy, Selector, Source};

/// The example from the design: a seed, two graph walks and a service listing.
const EXAMPLE: &str = include_str!("data/example.json");

#[test]
fn the_example_is_accepted() {
    let selector = Selector::from_json(EXAMPLE).unwrap();
    assert_eq!(selector.tags(), ["me", "followed", "k2", "profiles"]);
    let clauses = selector.clauses();
    assert_eq!(clauses.len(), 4);
    let Source::Identity(alice) = &clauses[0].source else {
        panic!("{:?}", clauses[0])
    };
    assert!(alice.is_handle());
    assert_eq!(alice.as_str(), "alice.example");
    let Source::Walk { from, key } = &clauses[2].source else {
        panic!("{:?}", clauses[2])
    };
    assert_eq!(from, "followed");
    assert_eq!(key.collection.as_str(), "app.bsky.graph.follow");
    assert_eq!(key.attr.to_string(), "subject");
    assert!(!clauses[2].is_recursive());
    let Source::Service(call) = &clauses[3].source else {
        panic!("{:?}", clauses[3])
    };
    assert_eq!(call.service.as_deref(), Some("https://relay.example"));
    assert_eq!(
        call.method.as_str(),
        "com.atproto.sync.listReposByCollection"
    );
    assert_eq!(
        call.params,
        [("collection".to_owned(), "app.bsky.actor.profile".to_owned())]
    );
    assert_eq!(call.attr.to_string(), "repos.*.did");
    let pagination = call.pagination.as_ref().unwrap();
    assert_eq!(
        (pagination.param.as_str(), pagination.attr.to_string()),
        ("cursor", "cursor".to_owned())
    );
    // Both walks follow the same edges, so the engine extracts them once.
    let keys: Vec<String> = selector
        .walk_keys()
        .iter()
        .map(|key| format!("{} {}", key.collection, key.attr))
        .collect();
    assert_eq!(keys, ["app.bsky.graph.follow subject"]);
}

#[test]
fn identities_can_be_dids() {
    let selector = Selector::from_json(
        r#"{"select": [
            {"where": {"repo": "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz"}, "tag": "me"},
            {"where": {"repo": "did:web:bob.example"}, "tag": "me"},
            {"where": {"repo": "at://Carol.Example"}, "tag": "me"},
            {"where": {"repo": "me", "collection": "app.bsky.graph.follow", "attr": "subject",
                       "max_depth": 2, "max_repos": 500}, "tag": "me"},
            {"where": {"repo": "me", "max_repos": 3}, "tag": "copy"},
            {"where": {"service": "http://localhost:2583", "method": "com.atproto.sync.listRepos",
                       "params": {"limit": 1000, "all": true}, "attr": "repos.*.did"}, "tag": "all"}
        ]}"#,
    )
    .unwrap();
    let identities: Vec<(bool, &str)> = selector
        .clauses()
        .iter()
        .filter_map(|clause| match &clause.source {
            Source::Identity(identity) => Some((identity.is_did(), identity.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        identities,
        [
            (true, "did:plc:ewvi7nxzyoun6zhxrhs64oiz"),
            (true, "did:web:bob.example"),
            (false, "carol.example"),
        ]
    );
    let crawl = &selector.clauses()[3];
    assert!(crawl.is_recursive());
    assert_eq!((crawl.max_depth, crawl.max_repos), (Some(2), Some(500)));
    assert_eq!(selector.clauses()[4].source, Source::Tag("me".into()));
    let Source::Service(call) = &selector.clauses()[5].source else {
        panic!()
    };
    assert_eq!(
        call.params,
        [
            ("limit".to_owned(), "1000".to_owned()),
            ("all".to_owned(), "true".to_owned())
        ]
    );
    assert!(call.pagination.is_none());
    assert_eq!(selector.tags(), ["me", "copy", "all"]);
}

#[test]
fn tags_come_after_their_sources() {
    let selector = Selector::from_json(
        r#"{"select": [
            {"where": {"repo": "b", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "c"},
            {"where": {"repo": "a"}, "tag": "b"},
            {"where": {"repo": "did:plc:ewvi7nxzyoun6zhxrhs64oiz"}, "tag": "a"},
            {"where": {"repo": "did:plc:ewvi7nxzyoun6zhxrhs64oiz"}, "tag": "z"},
            {"where": {"repo": "a", "collection": "app.bsky.graph.block", "attr": "subject"}, "tag": "c"}
        ]}"#,
    )
    .unwrap();
    // Ties go to the tag seen first: "c" (first clause) as soon as its sources are done.
    assert_eq!(selector.tags(), ["a", "b", "c", "z"]);
    let keys: Vec<String> = selector
        .walk_keys()
        .iter()
        .map(|key| key.collection.to_string())
        .collect();
    assert_eq!(keys, ["app.bsky.graph.block", "app.bsky.graph.follow"]);
}

/// The problems a rejected `document` shows, one per line.
fn rejection(document: &str) -> Vec<String> {
    let error = Selector::from_json(document).unwrap_err();
    let lines: Vec<String> = error.to_string().lines().map(str::to_owned).collect();
    assert_eq!(error.problems().len(), lines.len());
    lines
}

/// Checks that `document` is rejected with exactly these problems.
fn check_rejected(document: &str, expected: &[&str]) {
    assert_eq!(rejection(document), expected, "for {document}");
}

#[test]
fn each_problem_names_its_place() {
    let cases: &[(&str, &[&str])] = &[
        // The document as a whole.
        ("[]", &[r#"expected a JSON object with "select", found an array"#]),
        ("{", &["invalid JSON: EOF while parsing an object at line 1 column 1"]),
        (r#"{}"#, &[r#"missing "select""#]),
        (r#"{"select": []}"#, &["select: expected at least one clause, found none"]),
        (r#"{"select": {}}"#, &["select: expected an array of clauses, found an object"]),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "a"}], "retian": {}}"#,
            &[r#"unknown key "retian" (expected "select", "retain")"#],
        ),
        // Clauses.
        (r#"{"select": [3]}"#, &[r#"select[0]: expected an object with "where" and "tag", found 3"#]),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}}]}"#,
            &[r#"select[0]: missing "tag""#],
        ),
        (
            r#"{"select": [{"tag": "a"}]}"#,
            &[r#"select[0]: missing "where""#],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "a", "note": "x"}]}"#,
            &[r#"select[0]: unknown key "note" (expected "where", "tag")"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "Me"}]}"#,
            &[r#"select[0].tag: bad tag "Me": expected 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "_me"}]}"#,
            &[r#"select[0].tag: bad tag "_me": expected 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": 1}]}"#,
            &["select[0].tag: expected a string, found 1"],
        ),
        (
            r#"{"select": [{"where": "did:web:a.example", "tag": "a"}]}"#,
            &["select[0].where: expected an object, found a string"],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example", "colection": "app.bsky.graph.follow"}, "tag": "a"}]}"#,
            &[r#"select[0].where: unknown key "colection" (expected "repo", "collection", "attr", "max_depth", "max_repos", "service", "method", "params", "pagination")"#],
        ),
        (r#"{"select": [{"where": {}, "tag": "a"}]}"#, &[r#"select[0].where: missing "repo" (or "service")"#]),
        // `where.repo`.
        (
            r#"{"select": [
                {"where": {"repo": "did:web:a.example"}, "tag": "followed"},
                {"where": {"repo": "folowed"}, "tag": "b"}]}"#,
            &[r#"select[1].where.repo: unknown tag "folowed""#],
        ),
        (
            r#"{"select": [{"where": {"repo": "alice.example"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: unknown tag "alice.example"; to select a handle write "at://alice.example""#],
        ),
        (
            r#"{"select": [{"where": {"repo": "Not A Tag"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: unknown tag "Not A Tag": expected "at://HANDLE", "at://DID", a DID or a tag name"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:plc"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: did "did:plc": expected ':' after the method, found end of input"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "at://alice"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: at-identifier "alice": expected at least two segments separated by '.'"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "at://alice.example/app.bsky.feed.post"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: expected at://HANDLE or at://DID, found a path in "at://alice.example/app.bsky.feed.post""#],
        ),
        (
            r#"{"select": [{"where": {"repo": "a"}, "tag": "a"}]}"#,
            &[
                r#"select[0].where.repo: tag "a" cannot be its own source, except in a graph walk"#,
            ],
        ),
        // Walks.
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example", "collection": "app.bsky.graph.follow"}, "tag": "a"}]}"#,
            &[r#"select[0].where: "collection" needs "attr" (the path to follow)"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example", "attr": "subject"}, "tag": "a"}]}"#,
            &[r#"select[0].where: "attr" needs "collection" (the records to read)"#],
        ),
        (
            r#"{"select": [{"where": {"repo": "at://alice.example", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: a graph walk starts from a tag, found "alice.example"; give it a clause and tag of its own, and walk from that tag"#],
        ),
        (
            r#"{"select": [
                {"where": {"repo": "did:web:a.example"}, "tag": "a"},
                {"where": {"repo": "a", "collection": "follow", "attr": "subject..uri"}, "tag": "b"}]}"#,
            &[
                r#"select[1].where.collection: nsid "follow": expected at least three segments separated by '.', found one"#,
                r#"select[1].where.attr: attr path "subject..uri": empty segment (leading, trailing or doubled '.')"#,
            ],
        ),
        (
            r#"{"select": [{"where": {"repo": "a", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "a"}]}"#,
            &[r#"select[0].where.repo: tag "a" only walks from itself: add a clause that gives it repos to start from"#],
        ),
        (
            r#"{"select": [
                {"where": {"repo": "did:web:a.example"}, "tag": "seed"},
                {"where": {"repo": "b"}, "tag": "a"},
                {"where": {"repo": "a", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "b"},
                {"where": {"repo": "seed"}, "tag": "b"}]}"#,
            &[r#"select[2].where.repo: tags form a cycle: "a" -> "b" -> "a" (each takes its repos from the next)"#],
        ),
        (
            r#"{"select": [
                {"where": {"repo": "c"}, "tag": "a"},
                {"where": {"repo": "a"}, "tag": "b"},
                {"where": {"repo": "b"}, "tag": "c"}]}"#,
            &[r#"select[1].where.repo: tags form a cycle: "a" -> "c" -> "b" -> "a" (each takes its repos from the next)"#],
        ),
        // Limits.
        (
            r#"{"select": [
                {"where": {"repo": "did:web:a.example"}, "tag": "a"},
                {"where": {"repo": "a", "collection": "app.bsky.graph.follow", "attr": "subject",
                           "max_depth": 0, "max_repos": -1}, "tag": "a"}]}"#,
            &[
                "select[1].where.max_repos: expected a whole number from 1 to 18446744073709551615, found -1",
                "select[1].where.max_depth: expected a whole number from 1 to 4294967295, found 0",
            ],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example", "max_depth": 2, "max_repos": 1.5}, "tag": "a"}]}"#,
            &[
                "select[0].where.max_repos: expected a whole number from 1 to 18446744073709551615, found 1.5",
                r#"select[0].where.max_depth: applies only to graph walks ("collection" with "attr")"#,
            ],
        ),
        // Services.
        (
            r#"{"select": [{"where": {"service": "ftp://relay.example", "method": "com.atproto.sync.listRepos",
                "attr": "repos.*.did"}, "tag": "a"}]}"#,
            &[r#"select[0].where.service: bad service URL "ftp://relay.example": expected an http:// or https:// URL"#],
        ),
        (
            r#"{"select": [{"where": {"service": "https://", "repo": "did:web:a.example", "max_depth": 1}, "tag": "a"}]}"#,
            &[
                r#"select[0].where: "repo" cannot be combined with an XRPC call ("method")"#,
                r#"select[0].where.max_depth: applies only to graph walks ("collection" with "attr")"#,
                r#"select[0].where.service: bad service URL "https://": expected a host after the scheme"#,
                r#"select[0].where: missing "method" (the XRPC method to call)"#,
                r#"select[0].where: missing "attr" (where the DIDs are in the response)"#,
            ],
        ),
        (
            r#"{"select": [{"where": {"service": "https://relay.example", "method": "com.atproto.sync.listRepos",
                "params": {"limit": [1], "x": null}, "attr": "repos.*.did",
                "pagination": {"param": "", "attr": "pages.*.cursor", "extra": 1}}, "tag": "a"}]}"#,
            &[
                "select[0].where.params.limit: expected a string, number or boolean, found an array",
                "select[0].where.params.x: expected a string, number or boolean, found null",
                r#"select[0].where.pagination: unknown key "extra" (expected "param", "attr")"#,
                r#"select[0].where.pagination.param: expected a parameter name, found """#,
                "select[0].where.pagination.attr: the cursor path pages.*.cursor must not fan out ('*')",
            ],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example", "method": "com.atproto.sync.listRepos"}, "tag": "a"}]}"#,
            &[
                r#"select[0].where: "repo" cannot be combined with an XRPC call ("method")"#,
                r#"select[0].where: missing "attr" (where the DIDs are in the response)"#,
            ],
        ),
        // Retain.
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "a"}], "retain": []}"#,
            &["retain: expected an object, found an array"],
        ),
        (
            r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "k2"}],
                "retain": {"k2": {"app.bsky.*": "latest:0", "*.bsky": "*", "app.b*": "*", "app..*": "*",
                                  "app.bsky.feed.post": 10},
                           "k3": {"*": "*"}, "k4": "*"}}"#,
            &[
                r#"retain.k2["app.bsky.*"]: bad policy "latest:0": N must be at least 1"#,
                r#"retain.k2["*.bsky"]: bad collection pattern "*.bsky": '*' may only stand alone or as the last segment; expected "*", an NSID or an NSID prefix such as "app.bsky.*""#,
                r#"retain.k2["app.b*"]: bad collection pattern "app.b*": '*' may only stand alone or as the last segment; expected "*", an NSID or an NSID prefix such as "app.bsky.*""#,
                r#"retain.k2["app..*"]: bad collection pattern "app..*": empty segment (leading or doubled '.'); expected "*", an NSID or an NSID prefix such as "app.bsky.*""#,
                r#"retain.k2["app.bsky.feed.post"]: expected a string, found 10"#,
                r#"retain.k3: no clause defines tag "k3""#,
                r#"retain.k4: no clause defines tag "k4""#,
                "retain.k4: expected an object, found a string",
            ],
        ),
    ];
    // Every mismatch at once, so that one run shows them all.
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(document, expected)| {
            let found = rejection(document);
            (found != *expected).then(|| format!("{document}\n  found {found:#?}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    check_rejected(
        r#"{
          "select": [
            {"where": {"repo": "at://alice.example"}, "tag": "me"},
            {"where": {"repo": "me", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "followed"},
            {"where": {"repo": "folowed", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "k2"},
            {"where": {"repo": "me", "collection": "app.bsky.graph.follow"}, "tag": "Bad"}
          ],
          "retain": {"k2": {"app.bsky.feed.post": "latest:0"}, "k9": {}}
        }"#,
        &[
            r#"select[2].where.repo: unknown tag "folowed""#,
            r#"select[3].tag: bad tag "Bad": expected 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"#,
            r#"select[3].where: "collection" needs "attr" (the path to follow)"#,
            r#"retain.k2["app.bsky.feed.post"]: bad policy "latest:0": N must be at least 1"#,
            r#"retain.k9: no clause defines tag "k9""#,
        ],
    );
}

/// Checks what a repo with `tags` keeps of `collection` under the example's retain section.
fn check_keep(selector: &Selector, tags: &[&str], collection: &str, expected: Keep) {
    let keep = selector.retention().keep(tags.iter().copied(), collection);
    assert_eq!(keep, expected, "{tags:?} {collection}");
}

const NOTHING: Keep = Keep {
    all: false,
    self_rkey: false,
    latest: 0,
};
const ALL: Keep = Keep {
    all: true,
    self_rkey: false,
    latest: 0,
};
const SELF: Keep = Keep {
    all: false,
    self_rkey: true,
    latest: 0,
};

fn latest(n: u32) -> Keep {
    Keep {
        latest: n,
        ..NOTHING
    }
}

#[test]
fn the_most_specific_pattern_wins_and_tags_unite() {
    let selector = Selector::from_json(EXAMPLE).unwrap();
    let retention = selector.retention();
    check_keep(
        &selector,
        &["k2", "profiles"],
        "app.bsky.actor.profile",
        SELF,
    );
    check_keep(&selector, &["k2"], "app.bsky.feed.post", latest(10));
    check_keep(&selector, &["k2"], "app.bsky.graph.follow", latest(1000));
    check_keep(&selector, &["k2"], "com.example.thing", NOTHING);
    check_keep(&selector, &["profiles"], "app.bsky.feed.post", NOTHING);
    check_keep(&selector, &["k2", "me"], "app.bsky.feed.post", ALL);
    check_keep(&selector, &[], "app.bsky.feed.post", NOTHING);
    assert_eq!(
        retention.policy("k2", "app.bsky.feed.like"),
        Policy::Latest(1000)
    );
    assert_eq!(
        retention.policy("followed", "com.example.thing"),
        Policy::All
    );
    assert_eq!(
        retention.policy("unknown", "app.bsky.feed.post"),
        Policy::None
    );
    assert!(NOTHING.nothing() && !SELF.nothing() && !latest(1).nothing());
    assert!(ALL.keeps_everything() && !latest(5).keeps_everything());
}

/// `self` from one tag and `latest:N` from another keep both.
#[test]
fn self_and_latest_from_different_tags_add_up() {
    let selector = Selector::from_json(
        r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "a"},
                       {"where": {"repo": "did:web:a.example"}, "tag": "b"}],
            "retain": {"a": {"app.bsky.*": "self"}, "b": {"*": "latest:3", "app.bsky.feed.*": "none"}}}"#,
    )
    .unwrap();
    let keep = selector
        .retention()
        .keep(["a", "b"], "app.bsky.actor.profile");
    assert_eq!(
        keep,
        Keep {
            self_rkey: true,
            latest: 3,
            all: false
        }
    );
    // `app.bsky.feed.*` is more specific than `*` for b, and a keeps only `self`.
    check_keep(&selector, &["a", "b"], "app.bsky.feed.post", SELF);
    check_keep(&selector, &["b"], "com.example.thing", latest(3));
    assert!(keep.keeps("self", 50) && keep.keeps("3k2", 2) && !keep.keeps("3k1", 3));
}

#[test]
fn tags_without_entries_keep_nothing_and_no_section_keeps_all() {
    let with_section = Selector::from_json(
        r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "a"},
                       {"where": {"repo": "a", "collection": "app.bsky.graph.follow", "attr": "subject"}, "tag": "step"},
                       {"where": {"repo": "step"}, "tag": "kept"}],
            "retain": {"a": {"*": "none"}, "kept": {"*": "*"}}}"#,
    )
    .unwrap();
    check_keep(&with_section, &["step"], "app.bsky.feed.post", NOTHING);
    check_keep(&with_section, &["a"], "app.bsky.feed.post", NOTHING);
    check_keep(&with_section, &["a", "kept"], "app.bsky.feed.post", ALL);
    let retention = with_section.retention();
    assert!(!retention.keeps_anything(["step", "a"]));
    assert!(retention.keeps_anything(["step", "kept"]));

    let without = Selector::from_json(
        r#"{"select": [{"where": {"repo": "did:web:a.example"}, "tag": "a"}]}"#,
    )
    .unwrap();
    check_keep(&without, &["a"], "app.bsky.feed.post", ALL);
    check_keep(&without, &["a"], "com.example.thing", ALL);
    assert!(without.retention().keeps_anything(["a"]));
}

/// The shipped examples (`examples/*.json`) are valid; a call without `service` goes to the relay.
#[test]
fn the_shipped_examples_are_accepted() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            butterfly_selector::Selector::from_json(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert_eq!(seen, 4);
    let profiles = std::fs::read_to_string(format!("{dir}/profiles.json")).unwrap();
    let selector = butterfly_selector::Selector::from_json(&profiles).unwrap();
    match &selector.clauses()[0].source {
        butterfly_selector::Source::Service(call) => assert_eq!(call.service, None),
        other => panic!("{other:?}"),
    }
}
