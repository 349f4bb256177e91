//! Ordered maps built by insertion. `BTreeMap`'s `collect` (and so that of
//! serde_json's `Map`) sorts its input with a stable sort that is compiled
//! again for each iterator type collected, about 4 KiB of code each: two
//! dozen of them held the release binary over its 1.5 MiB bound
//! (`binary_size` in scripts/bench-http.sh). As with `collect`, a later
//! pair replaces an earlier one with the same key.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The map of `pairs`.
pub(crate) fn map<K: Ord, V>(pairs: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        map.insert(k, v);
    }
    map
}

/// The JSON object of `pairs`.
pub(crate) fn object(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
    let mut map = Map::new();
    for (k, v) in pairs {
        map.insert(k, v);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_as_collect_builds_them_later_pairs_winning() {
        let pairs = [("b", 1), ("a", 2), ("b", 3)];
        assert_eq!(map(pairs), pairs.into_iter().collect::<BTreeMap<_, _>>());
        let json = pairs.map(|(k, v)| (k.to_string(), Value::from(v)));
        let collected: Map<String, Value> = json.clone().into_iter().collect();
        assert_eq!(object(json), Value::Object(collected));
    }
}
