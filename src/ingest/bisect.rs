//! Bisection of a batch that PostgreSQL refuses as a whole: the ranges of its
//! records still to apply, in record order, where a refused range is replaced
//! by its two halves. Halves hold fewer suspects (a record whose data the
//! database refuses ends up alone) and take fewer locks (a batch the lock
//! table cannot hold goes through in parts). Which errors call for a split
//! is [`crate::retry::Class::splits_batch`]; what a caller does with a single
//! refused record is its own affair.

use std::{collections::VecDeque, ops::Range};

/// The ranges of a batch's records still to apply, first to last.
#[derive(Debug, Clone)]
pub struct Bisection {
    pending: VecDeque<Range<usize>>,
    splits: usize,
}

impl Bisection {
    /// A batch of `len` records, to be applied whole (one range, empty for
    /// an empty batch, which still moves nothing but its offset).
    pub fn new(len: usize) -> Self {
        let mut pending = VecDeque::new();
        pending.push_back(0..len);
        Self { pending, splits: 0 }
    }

    /// The next range to apply; `None` once every record is applied.
    pub fn next_range(&mut self) -> Option<Range<usize>> {
        self.pending.pop_front()
    }

    /// Puts the halves of `range` (just refused) before every other pending
    /// range, the first half next, so that records stay in offset order.
    /// False, and nothing pending changes, when `range` holds one record or
    /// none: there is nothing left to split.
    pub fn split(&mut self, range: Range<usize>) -> bool {
        if range.len() < 2 {
            return false;
        }
        let middle = range.start + range.len() / 2;
        self.pending.push_front(middle..range.end);
        self.pending.push_front(range.start..middle);
        self.splits += 1;
        true
    }

    /// How many ranges were split so far.
    pub fn splits(&self) -> usize {
        self.splits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a batch of `len` records where every range holding a record
    /// of `refused` is refused; returns the ranges applied, in order (as
    /// start and end), and the splits.
    fn run(len: usize, refused: &[usize]) -> (Vec<(usize, usize)>, usize) {
        let mut bisection = Bisection::new(len);
        let mut applied = Vec::new();
        while let Some(range) = bisection.next_range() {
            let refuses = refused.iter().any(|r| range.contains(r));
            if refuses && bisection.split(range.clone()) {
                continue;
            }
            applied.push((range.start, range.end));
        }
        (applied, bisection.splits())
    }

    #[test]
    fn a_batch_nobody_refuses_is_applied_whole() {
        assert_eq!(run(10, &[]), (vec![(0, 10)], 0));
        assert_eq!(run(0, &[]), (vec![(0, 0)], 0));
    }

    #[test]
    fn a_refused_record_ends_up_alone_and_the_rest_in_order() {
        let (applied, splits) = run(10, &[3]);
        assert_eq!(applied, vec![(0, 2), (2, 3), (3, 4), (4, 5), (5, 10)]);
        assert_eq!(splits, 4);
        let covered: Vec<usize> = applied.into_iter().flat_map(|(s, e)| s..e).collect();
        assert_eq!(covered, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_single_record_is_not_split() {
        let mut bisection = Bisection::new(1);
        let range = bisection.next_range().unwrap();
        assert!(!bisection.split(range));
        assert_eq!(bisection.next_range(), None);
        assert_eq!(bisection.splits(), 0);
    }
}
