//! Putting the relay's messages back in log order on a consumer.
//!
//! Kafka orders messages within a partition only, and the relay keys them by stream, so two
//! events of different streams may arrive in either order; a relay that took the role over
//! republishes what its predecessor sent but did not checkpoint. Each message therefore names its
//! own log position and the position of the event the relay published just before it (`prev`):
//! the model applies a message only when its position is `prev`, skips positions it is past
//! (duplicates), and holds the others here, bounded, until their predecessor arrives or the gap
//! is read from the log instead.

use licensd_store::Position;
use std::collections::BTreeMap;
use std::time::Instant;

/// One relayed event with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Link<E> {
    pub position: Position,
    pub prev: Position,
    pub event: E,
}

/// What to do with a message just received.
#[derive(Debug, PartialEq)]
pub enum Offer<E> {
    /// At or before the cursor: applied already (a duplicate, or read from the log meanwhile).
    Stale,
    /// Its predecessor is the cursor: apply it now.
    Next(Link<E>),
    /// Held until its predecessor is applied.
    Held,
    /// The buffer is full and this message is the furthest from the cursor: not kept (the log
    /// has it; the caller reads the gap from there).
    Dropped,
}

/// Messages waiting for their predecessor, by `prev`, each with when it arrived.
pub struct Chain<E> {
    held: BTreeMap<Position, (Link<E>, Instant)>,
    capacity: usize,
}

impl<E> Chain<E> {
    /// A chain holding at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { held: BTreeMap::new(), capacity: capacity.max(1) }
    }

    pub fn offer(&mut self, cursor: Position, link: Link<E>, now: Instant) -> Offer<E> {
        if link.position <= cursor {
            return Offer::Stale;
        }
        if link.prev == cursor {
            return Offer::Next(link);
        }
        if link.prev > link.position {
            // Not a chain the relay makes: never applicable, the log fills what it claims.
            return Offer::Dropped;
        }
        if !self.held.contains_key(&link.prev) && self.held.len() >= self.capacity {
            // Keep the messages nearest the cursor: they are the ones a predecessor can unlock.
            match self.held.last_key_value() {
                Some((furthest, _)) if *furthest > link.prev => {
                    let furthest = *furthest;
                    self.held.remove(&furthest);
                }
                _ => return Offer::Dropped,
            }
        }
        // A duplicate of a held message (the same `prev`) is the same event: keep the first
        // arrival's time, so a gap is not waited for again.
        let arrived = self.held.get(&link.prev).map_or(now, |(_, at)| *at);
        self.held.insert(link.prev, (link, arrived));
        Offer::Held
    }

    /// The held message that follows `cursor`, if any; drops those the cursor has passed (a
    /// message whose predecessor lies before the cursor lies at or before it itself, as the
    /// chain follows the log's order).
    pub fn next(&mut self, cursor: Position) -> Option<Link<E>> {
        while let Some((prev, _)) = self.held.first_key_value() {
            if *prev >= cursor {
                break;
            }
            let prev = *prev;
            self.held.remove(&prev);
        }
        let (link, _) = self.held.remove(&cursor)?;
        Some(link)
    }

    /// When the longest-waiting held message arrived: past the gap bound, the caller reads the
    /// gap from the log.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.held.values().map(|(_, at)| *at).min()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: i64) -> Position {
        Position { tx: 7, seq }
    }

    fn link(seq: i64, prev: i64) -> Link<i64> {
        Link { position: at(seq), prev: at(prev), event: seq }
    }

    /// Feeds messages as a consumer would: applies what follows the cursor, then whatever the
    /// buffer releases; returns what was applied, in order.
    fn feed(chain: &mut Chain<i64>, cursor: &mut Position, links: impl IntoIterator<Item = Link<i64>>) -> Vec<i64> {
        let mut applied = Vec::new();
        for link in links {
            if let Offer::Next(link) = chain.offer(*cursor, link, Instant::now()) {
                applied.push(link.event);
                *cursor = link.position;
                while let Some(next) = chain.next(*cursor) {
                    applied.push(next.event);
                    *cursor = next.position;
                }
            }
        }
        applied
    }

    #[test]
    fn in_order_messages_are_applied_as_they_come() {
        let (mut chain, mut cursor) = (Chain::new(8), at(0));
        assert_eq!(feed(&mut chain, &mut cursor, [link(1, 0), link(2, 1), link(5, 2)]), vec![1, 2, 5]);
        assert!(chain.is_empty());
    }

    #[test]
    fn out_of_order_messages_wait_for_their_predecessor() {
        let (mut chain, mut cursor) = (Chain::new(8), at(0));
        assert_eq!(feed(&mut chain, &mut cursor, [link(3, 2), link(2, 1)]), Vec::<i64>::new());
        assert_eq!(chain.len(), 2);
        assert!(chain.waiting_since().is_some());
        assert_eq!(feed(&mut chain, &mut cursor, [link(1, 0)]), vec![1, 2, 3]);
        assert!(chain.is_empty() && chain.waiting_since().is_none());
    }

    #[test]
    fn duplicates_of_a_relay_handover_are_skipped() {
        let (mut chain, mut cursor) = (Chain::new(8), at(0));
        let first = feed(&mut chain, &mut cursor, [link(1, 0), link(2, 1), link(3, 2)]);
        // The successor resumes from an older checkpoint and sends 2 and 3 again, then 4.
        let again = feed(&mut chain, &mut cursor, [link(2, 1), link(3, 2), link(4, 3), link(4, 3)]);
        assert_eq!((first, again), (vec![1, 2, 3], vec![4]));
        // A duplicate of a held message keeps its first arrival time.
        let mut chain = Chain::new(8);
        let early = Instant::now();
        assert_eq!(chain.offer(at(0), link(9, 8), early), Offer::Held);
        assert_eq!(chain.offer(at(0), link(9, 8), Instant::now()), Offer::Held);
        assert_eq!((chain.len(), chain.waiting_since()), (1, Some(early)));
    }

    #[test]
    fn a_gap_read_from_the_log_releases_what_follows_and_drops_what_it_covered() {
        let (mut chain, mut cursor) = (Chain::new(8), at(0));
        // 1 and 2 never arrive (the broker lost them, or they are late); 3, 4 and 6 wait.
        assert!(feed(&mut chain, &mut cursor, [link(3, 2), link(4, 3), link(6, 4)]).is_empty());
        // The log is read up to 3: 3 is dropped as applied, 4 and 6 follow.
        cursor = at(3);
        let released: Vec<i64> = std::iter::from_fn(|| {
            let next = chain.next(cursor)?;
            cursor = next.position;
            Some(next.event)
        })
        .collect();
        assert_eq!(released, vec![4, 6]);
        assert!(chain.is_empty());
        // Read past everything held: all of it is stale.
        assert!(feed(&mut chain, &mut cursor, [link(9, 8), link(8, 7)]).is_empty());
        assert_eq!(chain.next(at(20)), None);
        assert!(chain.is_empty());
    }

    #[test]
    fn a_full_buffer_keeps_the_messages_nearest_the_cursor() {
        let (mut chain, cursor) = (Chain::new(2), at(0));
        assert_eq!(chain.offer(cursor, link(5, 4), Instant::now()), Offer::Held);
        assert_eq!(chain.offer(cursor, link(9, 8), Instant::now()), Offer::Held);
        // Nearer than the furthest held: it takes the furthest's place.
        assert_eq!(chain.offer(cursor, link(3, 2), Instant::now()), Offer::Held);
        assert_eq!(chain.len(), 2);
        // Further than everything held: not kept.
        assert_eq!(chain.offer(cursor, link(12, 11), Instant::now()), Offer::Dropped);
        assert_eq!(chain.next(at(2)).map(|l| l.event), Some(3));
        assert_eq!(chain.next(at(4)).map(|l| l.event), Some(5));
        assert_eq!(chain.next(at(8)), None, "9 was dropped for 3");
    }

    #[test]
    fn stale_and_malformed_links_are_refused() {
        let mut chain = Chain::new(4);
        assert_eq!(chain.offer(at(5), link(5, 4), Instant::now()), Offer::Stale);
        assert_eq!(chain.offer(at(5), link(2, 1), Instant::now()), Offer::Stale);
        assert_eq!(chain.offer(at(5), link(7, 9), Instant::now()), Offer::Dropped, "prev after position");
        assert!(chain.is_empty());
    }

    /// Every permutation of a short chain with duplicates applies each event once, in order.
    #[test]
    fn any_arrival_order_applies_each_event_once_in_log_order() {
        let links: Vec<Link<i64>> = (1..=6).map(|i| link(i * 2, (i - 1) * 2)).collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..500 {
            let mut shuffled: Vec<Link<i64>> = links.iter().chain(links.iter().take(3)).cloned().collect();
            for i in (1..shuffled.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                shuffled.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            let (mut chain, mut cursor) = (Chain::new(16), at(0));
            assert_eq!(feed(&mut chain, &mut cursor, shuffled), vec![2, 4, 6, 8, 10, 12]);
            assert!(chain.is_empty());
        }
    }
}
