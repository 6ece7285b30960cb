//! CAR reading of arbitrary bytes, then the MST walk and commit decoding over what it holds.
//!
//! Properties: never panics, whatever the header, length prefixes, CIDs, block bytes or tree shape.
#![no_main]

use butterfly_repo::car::CarReader;
use butterfly_repo::commit::Commit;
use butterfly_repo::{mst, BlockMap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Stream every block.
    if let Ok(reader) = CarReader::new(data) {
        for block in reader {
            if block.is_err() {
                break;
            }
        }
    }

    // Load into memory, then follow the root.
    let Ok(reader) = CarReader::new(data) else {
        return;
    };
    let Ok((header, mut map)) = BlockMap::from_car(reader) else {
        return;
    };
    let Some(root) = header.roots.first().copied() else {
        return;
    };
    // The root as an MST node (a commit slice's root is a commit, but any CID must be safe to walk).
    walk_all(root, &mut map);
    if let Some(bytes) = map.get(&root) {
        if let Ok(commit) = Commit::decode(&root, bytes) {
            // A repo CAR: walk the tree the commit points to.
            walk_all(commit.data, &mut map);
        }
    }
});

fn walk_all(root: butterfly_data::Cid, map: &mut BlockMap) {
    for item in mst::walk(root, map) {
        if item.is_err() {
            break;
        }
    }
}
