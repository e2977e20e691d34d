//! Deserializers for sequences and maps that refuse more than `N` elements *while*
//! decoding. bincode's memory limit covers strings and byte buffers but not the elements
//! of a sequence, so without this a small frame of tiny signals could still decode into a
//! large structure; with it, every collection on the wire has a fixed ceiling.

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// Caps what a length claims before anything is reserved.
fn capacity(hint: Option<usize>, limit: usize) -> usize {
    hint.unwrap_or(0).min(limit).min(1024)
}

/// A `Vec<T>` of at most `N` elements.
pub fn vec<'de, D, T, const N: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {N} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            if seq.size_hint().is_some_and(|n| n > N) {
                return Err(A::Error::custom(format!("more than {N} elements")));
            }
            let mut out = Vec::with_capacity(capacity(seq.size_hint(), N));
            while let Some(element) = seq.next_element()? {
                if out.len() == N {
                    return Err(A::Error::custom(format!("more than {N} elements")));
                }
                out.push(element);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded::<T, N>(PhantomData))
}

/// A `BTreeMap<K, V>` of at most `N` entries.
pub fn map<'de, D, K, V, const N: usize>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Bounded<K, V, const N: usize>(PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, const N: usize> Visitor<'de>
        for Bounded<K, V, N>
    {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map of at most {N} entries")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            if map.size_hint().is_some_and(|n| n > N) {
                return Err(A::Error::custom(format!("more than {N} entries")));
            }
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry()? {
                if out.len() == N {
                    return Err(A::Error::custom(format!("more than {N} entries")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Bounded::<K, V, N>(PhantomData))
}
