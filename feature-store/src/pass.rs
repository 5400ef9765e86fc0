//! The rescoring pass that follows a model change, per input partition: a cursor over
//! the partition's last-order index, saved in Redis with the states each slice rescored,
//! so a restart or a rebalance resumes the pass where it stood instead of dropping it.
//! The processors move it; [`crate::model::rollout`] reads how far it got.

use serde::{Deserialize, Serialize};

/// A place in a partition's last-order index: (last order time, customer id).
pub type IndexPos = (i64, String);

/// Where a partition stands in its rescoring pass, by places in its last-order index
/// (last order time, customer id: the index's own order). Places, not ranks: a customer
/// whose new order moves it to the end of the index shifts the ranks of all after it,
/// and a rank cursor would skip as many customers. A customer who moves is rescored by
/// the event that moved it, with the new model, so the pass needs no snapshot.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassCursor {
    /// The model version the pass rescores with; `None` before the partition's first.
    pub model: Option<String>,
    /// Where the pass began (`None`: at the start of the index). A pass that began
    /// mid-index (a newer model arrived mid-pass) wraps to the start and ends there.
    pub from: Option<IndexPos>,
    /// The last place rescored; `None` before the first page (or after wrapping).
    pub after: Option<IndexPos>,
    pub wrapped: bool,
    pub done: bool,
}

impl PassCursor {
    /// Starts a pass with `model` unless this cursor's pass already uses it; true when
    /// it did. A pass starts where the cursor stands (a newer model mid-pass, or a
    /// partition's first model at the start of the index) and ends one whole cycle of
    /// the index later.
    pub fn start(&mut self, model: &str) -> bool {
        if self.model.as_deref() == Some(model) {
            return false;
        }
        self.model = Some(model.to_owned());
        self.from = self.after.clone();
        self.wrapped = false;
        self.done = false;
        true
    }

    /// Takes `page` (up to `take` places after [`Self::after`], in index order) and
    /// returns the customers of it the pass rescores, moving the cursor past them.
    pub fn advance(&mut self, mut page: Vec<IndexPos>, take: usize) -> Vec<IndexPos> {
        if self.done {
            return Vec::new();
        }
        let at_end = page.len() < take;
        if self.wrapped {
            // Back at the start: up to and including where the pass began.
            let keep = page.partition_point(|pos| Some(pos) <= self.from.as_ref());
            if keep < page.len() || at_end {
                self.done = true;
            }
            page.truncate(keep);
        }
        if let Some(last) = page.last() {
            self.after = Some(last.clone());
        }
        if at_end && !self.done {
            match self.from {
                // The end of the index, where the pass ends or wraps to the start.
                None => self.done = true,
                Some(_) => {
                    self.wrapped = true;
                    self.after = None;
                }
            }
        }
        page
    }

    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and flags always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A last-order index: what `Store::index_after` reads, in memory.
    struct Index(BTreeSet<IndexPos>);

    impl Index {
        fn new(customers: std::ops::Range<i64>) -> Self {
            Self(customers.map(|i| (i, format!("c{i:03}"))).collect())
        }

        fn page(&self, after: Option<&IndexPos>, take: usize) -> Vec<IndexPos> {
            self.0
                .iter()
                .filter(|pos| after.is_none_or(|a| *pos > a))
                .take(take)
                .cloned()
                .collect()
        }

        /// A new order of `customer` at `at`: it moves to that place.
        fn order(&mut self, customer: &str, at: i64) {
            self.0.retain(|(_, c)| c != customer);
            self.0.insert((at, customer.to_owned()));
        }
    }

    /// Runs slices until the cursor is done; `between` runs after each (live orders).
    fn run(
        cursor: &mut PassCursor,
        index: &mut Index,
        take: usize,
        mut between: impl FnMut(&mut Index, &PassCursor),
    ) -> Vec<String> {
        let mut rescored = Vec::new();
        for _ in 0..1000 {
            if cursor.done {
                return rescored;
            }
            let page = index.page(cursor.after.as_ref(), take);
            rescored.extend(cursor.advance(page, take).into_iter().map(|(_, c)| c));
            between(index, cursor);
        }
        panic!("the pass did not end");
    }

    /// Orders during the pass move customers already rescored to the end of the index:
    /// every customer is still rescored (a rank cursor skipped one per move), and the
    /// pass ends.
    #[test]
    fn customers_moving_during_a_pass_do_not_hide_others() {
        let mut index = Index::new(0..100);
        let mut cursor = PassCursor::default();
        assert!(cursor.start("m1"));
        let mut now = 1000;
        let rescored = run(&mut cursor, &mut index, 10, |index, cursor| {
            // Two customers behind the cursor and one ahead of it order again.
            let behind: Vec<String> = index
                .0
                .iter()
                .filter(|pos| cursor.after.as_ref().is_some_and(|a| *pos <= a))
                .take(2)
                .map(|(_, c)| c.clone())
                .collect();
            for c in behind {
                now += 1;
                index.order(&c, now);
            }
            if let Some((_, c)) = index.page(cursor.after.as_ref(), 3).last().cloned() {
                now += 1;
                index.order(&c, now);
            }
        });
        let distinct: BTreeSet<&String> = rescored.iter().collect();
        assert_eq!(distinct.len(), 100, "missed: {:?}", {
            let all: BTreeSet<String> = (0..100).map(|i| format!("c{i:03}")).collect();
            all.into_iter()
                .filter(|c| !distinct.contains(c))
                .collect::<Vec<_>>()
        });
    }

    /// A newer model mid-pass: the pass goes on from where it stands, wraps to the start
    /// and ends where it restarted, so every customer is rescored after the restart.
    #[test]
    fn a_newer_model_mid_pass_covers_the_whole_index_once_more() {
        let mut index = Index::new(0..50);
        let mut cursor = PassCursor::default();
        cursor.start("m1");
        for _ in 0..2 {
            let page = index.page(cursor.after.as_ref(), 10);
            cursor.advance(page, 10);
        }
        assert_eq!(cursor.after, Some((19, "c019".into())));
        // Saved and read back (a restart of the processor) it goes on the same way.
        let mut cursor = PassCursor::decode(&cursor.encode()).unwrap();
        assert!(
            !cursor.start("m1"),
            "the same model does not restart the pass"
        );
        assert!(cursor.start("m2"));
        let rescored = run(&mut cursor, &mut index, 10, |_, _| {});
        let expected: Vec<String> = (20..50).chain(0..20).map(|i| format!("c{i:03}")).collect();
        assert_eq!(rescored, expected);
        // A newer model on a finished partition covers it all again.
        assert!(cursor.start("m3"));
        let again = run(&mut cursor, &mut index, 7, |_, _| {});
        assert_eq!(again.len(), 50, "{again:?}");
        // An empty index ends at once.
        let mut empty = PassCursor::default();
        empty.start("m1");
        assert!(run(&mut empty, &mut Index::new(0..0), 10, |_, _| {}).is_empty());
        assert!(empty.done);
    }
}
