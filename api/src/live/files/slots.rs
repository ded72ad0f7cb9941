//! At most N transfers (streams and URL downloads) running at once per app. Counted under one
//! lock, so N racing starts get exactly N slots; a slot is given back when its guard drops,
//! whichever way the transfer ended.

use licensd_domain::AppId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct AppSlots {
    max: usize,
    running: Arc<Mutex<HashMap<AppId, usize>>>,
}

/// One running transfer's slot.
#[derive(Debug)]
pub struct Slot {
    app_id: AppId,
    running: Arc<Mutex<HashMap<AppId, usize>>>,
}

impl AppSlots {
    pub fn new(max: usize) -> Self {
        Self { max, running: Arc::default() }
    }

    /// A slot for one more transfer of the app; `None` when it runs `max` already.
    pub fn take(&self, app_id: AppId) -> Option<Slot> {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = running.entry(app_id).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot { app_id, running: self.running.clone() })
    }

    pub fn running(&self, app_id: AppId) -> usize {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&app_id).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.app_id) {
            *count = count.saturating_sub(1);
            // Decided under the same lock as every take: no reader sees the entry half gone.
            if *count == 0 {
                running.remove(&self.app_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// 16 threads race to take and give back slots of one app with a cap of 3: never more than
    /// 3 held at once, every take that failed happened while 3 were held, and all come back.
    #[test]
    fn racing_takes_never_exceed_the_cap_and_every_slot_comes_back() {
        let slots = Arc::new(AppSlots::new(3));
        let app = AppId(uuid::Uuid::new_v4());
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (slots, held, peak, barrier) = (slots.clone(), held.clone(), peak.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut granted = 0;
                    for _ in 0..2_000 {
                        if let Some(slot) = slots.take(app) {
                            granted += 1;
                            let now = held.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                            std::thread::yield_now();
                            held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                    granted
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(granted > 0);
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 3, "never more than the cap at once");
        assert_eq!(slots.running(app), 0, "every slot came back");
        let all: Vec<_> = (0..3).map(|_| slots.take(app).expect("the cap is free again")).collect();
        assert!(slots.take(app).is_none());
        drop(all);
    }
}
