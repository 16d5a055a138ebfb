//! Re-keying per-interface tallies: when a vanished interface is folded
//! into the report's row of older vanished ones, every area moves its
//! entries for that ifindex to the row's key and adds them to what is
//! there. One loop for all of them (counters, DNS, flood, drops).

use std::collections::BTreeMap;

/// Moves each entry of `map` whose key `selected` picks to the key `to`
/// makes of it, adding it (`add`) to the entry already there, if any.
pub fn fold<K: Ord + Copy, V: Default>(
    map: &mut BTreeMap<K, V>,
    selected: impl Fn(&K) -> bool,
    to: impl Fn(K) -> K,
    add: impl Fn(&mut V, &V),
) {
    let keys: Vec<K> = map.keys().filter(|k| selected(k)).copied().collect();
    for key in keys {
        if let Some(value) = map.remove(&key) {
            add(map.entry(to(key)).or_default(), &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn folds_into_an_existing_entry_and_leaves_the_rest() {
        let mut map = BTreeMap::from([((7, 'a'), 2), ((7, 'b'), 3), ((0, 'a'), 10), ((8, 'a'), 1)]);
        super::fold(&mut map, |k| k.0 == 7, |k| (0, k.1), |t, n| *t += n);
        assert_eq!(
            map,
            BTreeMap::from([((0, 'a'), 12), ((0, 'b'), 3), ((8, 'a'), 1)])
        );
    }
}
