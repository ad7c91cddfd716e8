//! InitProducerId for idempotent producers, and the allocation of producer
//! ids: unique across restarts, handed out from blocks whose end is written
//! to `<data_dir>/producer.ids` before any id of the block is used.

use std::path::{Path, PathBuf};

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use parking_lot::Mutex;

use super::Broker;
use crate::log::checkpoint::write_atomically;
use crate::log::LogError;
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

const BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the block reserved on disk)
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> Result<ProducerIds, LogError> {
        let path = data_dir.join("producer.ids");
        let reserved = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|_| LogError::BadTopicMeta { path: path.clone(), reason: "not a number".into() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        // Ids below the reserved end may have been handed out: start after it.
        Ok(ProducerIds { path, state: Mutex::new((reserved, reserved)) })
    }

    /// A producer id never handed out before, by this data directory.
    pub fn next(&self) -> Result<i64, LogError> {
        let mut s = self.state.lock();
        if s.0 >= s.1 {
            let end = s.0 + BLOCK;
            write_atomically(&self.path, format!("{end}\n").as_bytes())?;
            s.1 = end;
        }
        let id = s.0;
        s.0 += 1;
        Ok(id)
    }
}

pub fn init_producer_id(broker: &Broker, ctx: &Context, req: InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if let Some(id) = req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        if !broker.authorize(ctx, Operation::Write, ResourceType::TransactionalId, id) {
            r.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            return r;
        }
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        let result = crate::security::off_runtime(|| broker.with_txn_effects(|fx| broker.txns.init_producer(id.as_str(), req.transaction_timeout_ms, expected, || broker.producer_ids.next(), fx)));
        match result {
            Ok((pid, epoch)) => {
                r.producer_id = ProducerId(pid);
                r.producer_epoch = epoch;
            }
            // Clients before v4 know the fencing as INVALID_PRODUCER_EPOCH (as Kafka answers them).
            Err(code::PRODUCER_FENCED) if version < 4 => r.error_code = code::INVALID_PRODUCER_EPOCH,
            Err(code) => r.error_code = code,
        }
        return r;
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE
    // on some topic (KIP-679), as in Kafka.
    if !broker.authorize_cluster(ctx, Operation::IdempotentWrite) && !broker.authorize_any(ctx, Operation::Write, ResourceType::Topic) {
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return r;
    }
    // An idempotent producer (no transactional id) always gets a fresh id,
    // as Kafka does, also when it asks for an epoch bump (KIP-360).
    match broker.producer_ids.next() {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "could not reserve producer ids");
            r.error_code = e.kafka_code();
        }
    }
    r
}
