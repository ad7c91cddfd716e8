//! Retention and DeleteRecords: whole segments leave the log, oldest first,
//! and the log start offset moves past them, durably before any file goes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::checkpoint;
use super::super::producer;
use super::super::segment::Segment;
use super::super::LogError;
use super::Log;

impl Log {
    /// Applies `retention.ms` and `retention.bytes`, and drops segments that
    /// lie wholly below the log start offset. Deletes whole segments only, the
    /// oldest first; rolls the active segment when it must go too. Returns
    /// how many segments were deleted.
    pub fn apply_retention(&self, now: i64) -> Result<usize, LogError> {
        let config = self.config();
        let _m = self.maintenance.lock();
        // Deciding and detaching happen under the appender lock, so a
        // concurrent delete_records or roll cannot shift what is chosen.
        let mut app = self.appender.lock();
        if app.closed {
            return Err(LogError::Closed);
        }
        app.producers.expire(now - producer::EXPIRATION_MS);
        let lso_now = self.log_start_offset();
        app.txns.trim(lso_now);
        let segs = self.segment_list();
        let lso = self.log_start_offset();
        let mut excess = if config.retention_bytes >= 0 {
            segs.iter().map(|s| s.size() as i64).sum::<i64>() - config.retention_bytes
        } else {
            i64::MIN
        };
        let mut doomed = 0;
        for (i, seg) in segs.iter().enumerate() {
            if seg.is_empty() {
                break;
            }
            let below_start = segs.get(i + 1).is_some_and(|n| n.base_offset <= lso);
            let newest = if seg.max_timestamp() >= 0 { seg.max_timestamp() } else { seg.last_modified_ms() };
            // Time and size retention apply only with cleanup.policy=delete.
            let expired = config.delete && config.retention_ms >= 0 && now - newest > config.retention_ms;
            let too_big = config.delete && excess >= seg.size() as i64;
            if !(below_start || expired || too_big) {
                break;
            }
            if too_big {
                excess -= seg.size() as i64;
            }
            doomed = i + 1;
        }
        if doomed == 0 {
            return Ok(0);
        }
        if doomed == segs.len() {
            // The active segment must go too: roll so a segment remains.
            self.roll_locked(&mut app, &config)?;
        }
        let removed = self.detach_below(segs[doomed - 1].base_offset + 1);
        drop(app);
        self.finish_delete(&removed)?;
        Ok(removed.len())
    }

    /// Removes from the map every segment whose base offset is below `bound`
    /// (never the last one) and moves the log start offset past them. Called
    /// with the appender lock held.
    fn detach_below(&self, bound: u64) -> Vec<Arc<Segment>> {
        let removed: Vec<Arc<Segment>> = {
            let mut map = self.segments.write();
            let last = *map.keys().next_back().expect("a log has a segment");
            let keys: Vec<u64> = map.range(..bound.min(last)).map(|(&k, _)| k).collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        let first_left = *self.segments.read().keys().next().expect("the active segment remains");
        self.log_start_offset.fetch_max(first_left, Ordering::AcqRel);
        removed
    }

    /// Makes the new log start offset durable, then deletes the files of
    /// detached segments (readers holding them keep reading: the descriptors
    /// stay open).
    fn finish_delete(&self, removed: &[Arc<Segment>]) -> Result<(), LogError> {
        if removed.is_empty() {
            return Ok(());
        }
        self.write_checkpoint()?;
        for seg in removed {
            seg.delete_files()?;
            tracing::info!(dir = %self.dir.display(), base_offset = seg.base_offset, "deleted a segment");
        }
        checkpoint::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Advances the log start offset to `offset` (DeleteRecords), durably,
    /// and deletes segments that fall wholly below it. Returns the new log
    /// start offset.
    pub fn delete_records(&self, offset: u64) -> Result<u64, LogError> {
        let _m = self.maintenance.lock();
        let app = self.appender.lock();
        if app.closed {
            return Err(LogError::Closed);
        }
        self.check_range(offset.max(self.log_start_offset()))?;
        if offset <= self.log_start_offset() {
            return Ok(self.log_start_offset());
        }
        self.log_start_offset.fetch_max(offset, Ordering::AcqRel);
        // Segments whose successor starts at or below the new start offset.
        let bound = {
            let map = self.segments.read();
            map.range(..=offset).next_back().map_or(0, |(&b, _)| b)
        };
        let removed = self.detach_below(bound);
        drop(app);
        self.write_checkpoint()?;
        self.finish_delete(&removed)?;
        Ok(self.log_start_offset())
    }

}
