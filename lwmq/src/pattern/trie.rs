//! A subscription trie: prefix matching of topics, with a count per topic.
//!
//! Used on both sides of publish/subscribe: a SUB counts how often the user subscribed
//! to each topic (a cancel is sent upstream only when the count drops to zero); a PUB
//! keeps one trie per subscriber pipe to decide whether a message goes to it.

use std::collections::BTreeMap;

use bytes::Bytes;

/// A set of topics with counts; a message matches when any topic is a prefix of it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Trie {
    root: Node,
    topics: usize,
}

#[derive(Debug, Default, Clone)]
struct Node {
    count: usize,
    children: BTreeMap<u8, Node>,
}

impl Trie {
    /// Adds one count for `topic`; returns true if the topic is new.
    pub(crate) fn add(&mut self, topic: &[u8]) -> bool {
        let mut node = &mut self.root;
        for b in topic {
            node = node.children.entry(*b).or_default();
        }
        node.count += 1;
        if node.count == 1 {
            self.topics += 1;
            true
        } else {
            false
        }
    }

    /// Removes one count for `topic`; returns true if that was the last one (the topic
    /// is gone). Removing an unknown topic does nothing and returns false.
    pub(crate) fn remove(&mut self, topic: &[u8]) -> bool {
        fn rm(node: &mut Node, topic: &[u8]) -> Option<bool> {
            match topic.split_first() {
                None => {
                    if node.count == 0 {
                        return None;
                    }
                    node.count -= 1;
                    Some(node.count == 0)
                }
                Some((b, rest)) => {
                    let child = node.children.get_mut(b)?;
                    let gone = rm(child, rest)?;
                    if child.count == 0 && child.children.is_empty() {
                        node.children.remove(b);
                    }
                    Some(gone)
                }
            }
        }
        let gone = rm(&mut self.root, topic).unwrap_or(false);
        if gone {
            self.topics -= 1;
        }
        gone
    }

    /// Removes `topic` whatever its count; returns true if it was there.
    pub(crate) fn remove_all(&mut self, topic: &[u8]) -> bool {
        let mut removed = false;
        while self.contains(topic) {
            removed = true;
            self.remove(topic);
        }
        removed
    }

    /// Whether `topic` itself (not a prefix) is subscribed.
    pub(crate) fn contains(&self, topic: &[u8]) -> bool {
        let mut node = &self.root;
        for b in topic {
            match node.children.get(b) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.count > 0
    }

    /// Whether some topic is a prefix of `data` (the empty topic matches everything).
    pub(crate) fn matches(&self, data: &[u8]) -> bool {
        let mut node = &self.root;
        if node.count > 0 {
            return true;
        }
        for b in data {
            match node.children.get(b) {
                Some(n) => node = n,
                None => return false,
            }
            if node.count > 0 {
                return true;
            }
        }
        false
    }

    /// Every topic, once each, in byte order.
    pub(crate) fn topics(&self) -> Vec<Bytes> {
        fn walk(node: &Node, prefix: &mut Vec<u8>, out: &mut Vec<Bytes>) {
            if node.count > 0 {
                out.push(Bytes::copy_from_slice(prefix));
            }
            for (b, child) in &node.children {
                prefix.push(*b);
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::with_capacity(self.topics);
        walk(&self.root, &mut Vec::new(), &mut out);
        out
    }

    /// Number of distinct topics.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_and_counts() {
        let mut t = Trie::default();
        assert!(!t.matches(b"anything"));
        assert!(t.add(b"ab"));
        assert!(!t.add(b"ab"), "second add of a topic is not new");
        assert!(t.add(b"xyz"));
        assert!(t.matches(b"ab"));
        assert!(t.matches(b"abc"));
        assert!(!t.matches(b"a"));
        assert!(!t.matches(b"xy"));
        assert!(t.matches(b"xyz\0\xff"));
        assert_eq!(t.topics(), vec![Bytes::from("ab"), Bytes::from("xyz")]);
        assert!(!t.remove(b"ab"), "one count remains");
        assert!(t.matches(b"abc"));
        assert!(t.remove(b"ab"));
        assert!(!t.matches(b"abc"));
        assert!(!t.remove(b"ab"), "removing an absent topic is a no-op");
        assert!(!t.remove(b"nope"));
        assert_eq!(t.len(), 1);
        assert!(t.add(b""));
        assert!(t.matches(b""));
        assert!(t.matches(b"q"));
        assert!(t.remove_all(b"xyz"));
        assert_eq!(t.topics(), vec![Bytes::new()]);
    }

    #[test]
    fn nested_topics_survive_removal_of_their_prefix() {
        let mut t = Trie::default();
        t.add(b"a");
        t.add(b"abc");
        assert!(t.remove(b"a"));
        assert!(!t.matches(b"ab"));
        assert!(t.matches(b"abcd"));
        assert!(t.contains(b"abc"));
        assert!(!t.contains(b"a"));
    }
}
