//! DescribeClientQuotas and AlterClientQuotas: the quotas of users and
//! client ids (`security::quota`). Entities are `user` and `client-id`
//! (Kafka's `ip` connection-rate quotas are not served); the quotas are
//! `producer_byte_rate`, `consumer_byte_rate` and `request_percentage`.
//! With an authorizer, describing needs DESCRIBE_CONFIGS on the cluster and
//! altering ALTER_CONFIGS, as in Kafka.

use kafka_protocol::messages::{alter_client_quotas_response, describe_client_quotas_response};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::protocol::code;
use crate::security::acl::Operation;
use crate::security::Context;
use crate::security::quota::{check_value, Change, Entity, Kind, Part, CLIENT_ID, USER};

/// DescribeClientQuotas match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

fn part_of<'a>(e: &'a Entity, entity_type: &str) -> Option<&'a Option<Part>> {
    match entity_type {
        USER => Some(&e.user),
        CLIENT_ID => Some(&e.client),
        _ => None,
    }
}

fn unknown_type(t: &str) -> String {
    if t == "ip" {
        "ip (connection rate) quotas are not supported by Eddy".to_string()
    } else {
        format!("unknown quota entity type {t:?}: use user or client-id")
    }
}

pub fn describe(broker: &Broker, ctx: &Context, req: DescribeClientQuotasRequest, _version: i16) -> DescribeClientQuotasResponse {
    let mut r = DescribeClientQuotasResponse::default();
    // Null entries with an error, as Kafka answers.
    r.entries = None;
    if !broker.authorize_cluster(ctx, Operation::DescribeConfigs) {
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        r.error_message = Some(StrBytes::from_static_str(code::denied(code::CLUSTER_AUTHORIZATION_FAILED)));
        return r;
    }
    let mut filter: Vec<(&str, i8, Option<&str>)> = Vec::new();
    for c in &req.components {
        let t = c.entity_type.as_str();
        let problem = if t != USER && t != CLIENT_ID {
            Some(unknown_type(t))
        } else if filter.iter().any(|(seen, _, _)| *seen == t) {
            Some(format!("entity type {t} appears twice in the filter"))
        } else {
            match (c.match_type, &c._match) {
                (MATCH_EXACT, None) => Some(format!("an exact match of {t} needs a name")),
                (MATCH_EXACT | MATCH_DEFAULT | MATCH_SPECIFIED, _) => None,
                (other, _) => Some(format!("unknown match type {other}")),
            }
        };
        if let Some(message) = problem {
            r.error_code = code::INVALID_REQUEST;
            r.error_message = Some(StrBytes::from_string(message));
            return r;
        }
        filter.push((t, c.match_type, c._match.as_deref()));
    }
    let matches = |e: &Entity| {
        let wanted = filter.iter().all(|(t, how, name)| match (part_of(e, t).cloned().flatten(), *how) {
            (Some(Part::Name(n)), MATCH_EXACT) => Some(n.as_str()) == *name,
            (Some(Part::Default), MATCH_DEFAULT) => true,
            (Some(Part::Name(_)), MATCH_SPECIFIED) => true,
            _ => false,
        });
        // Strict: the entity has no component the filter does not name.
        let extra = [(USER, &e.user), (CLIENT_ID, &e.client)].iter().any(|(t, p)| p.is_some() && !filter.iter().any(|(f, _, _)| f == t));
        wanted && !(req.strict && extra)
    };
    let entries = broker
        .quotas
        .all()
        .into_iter()
        .filter(|(e, _)| matches(e))
        .map(|(e, values)| {
            let mut entry = describe_client_quotas_response::EntryData::default();
            for (t, p) in [(USER, &e.user), (CLIENT_ID, &e.client)] {
                if let Some(p) = p {
                    let mut d = describe_client_quotas_response::EntityData::default();
                    d.entity_type = StrBytes::from_static_str(t);
                    d.entity_name = match p {
                        Part::Name(n) => Some(StrBytes::from_string(n.clone())),
                        Part::Default => None,
                    };
                    entry.entity.push(d);
                }
            }
            entry.values = values
                .into_iter()
                .map(|(k, v)| {
                    let mut d = describe_client_quotas_response::ValueData::default();
                    d.key = StrBytes::from_static_str(k.key());
                    d.value = v;
                    d
                })
                .collect();
            entry
        })
        .collect();
    r.entries = Some(entries);
    r
}

/// One AlterClientQuotas entry, checked: its entity and changes.
fn check_entry(entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData) -> Result<Vec<Change>, String> {
    let mut entity = Entity { user: None, client: None };
    if entry.entity.is_empty() {
        return Err("a quota entity needs a user or a client-id".into());
    }
    for d in &entry.entity {
        let t = d.entity_type.as_str();
        let slot = match t {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client,
            other => return Err(unknown_type(other)),
        };
        if slot.is_some() {
            return Err(format!("entity type {t} appears twice"));
        }
        *slot = Some(match &d.entity_name {
            Some(n) => Part::Name(n.to_string()),
            None => Part::Default,
        });
    }
    let mut changes: Vec<Change> = Vec::new();
    for op in &entry.ops {
        let kind = Kind::from_key(op.key.as_str()).ok_or_else(|| format!("unknown quota {:?}: use producer_byte_rate, consumer_byte_rate or request_percentage", op.key.as_str()))?;
        if changes.iter().any(|c| c.kind == kind) {
            return Err(format!("{} is changed twice", kind.key()));
        }
        if !op.remove {
            check_value(kind, op.value)?;
        }
        changes.push(Change { entity: entity.clone(), kind, value: (!op.remove).then_some(op.value) });
    }
    Ok(changes)
}

pub fn alter(broker: &Broker, ctx: &Context, req: AlterClientQuotasRequest, _version: i16) -> AlterClientQuotasResponse {
    let mut r = AlterClientQuotasResponse::default();
    let mut accepted = Vec::new();
    let mut outcome = Vec::new();
    let allowed = broker.authorize_cluster(ctx, Operation::AlterConfigs);
    for entry in &req.entries {
        if !allowed {
            outcome.push(Err((code::CLUSTER_AUTHORIZATION_FAILED, code::denied(code::CLUSTER_AUTHORIZATION_FAILED).to_string())));
            continue;
        }
        match check_entry(entry) {
            Ok(changes) => {
                outcome.push(Ok(()));
                accepted.extend(changes);
            }
            Err(message) => outcome.push(Err((code::INVALID_REQUEST, message))),
        }
    }
    if !req.validate_only && !accepted.is_empty() {
        if let Err(e) = crate::security::off_runtime(|| broker.quotas.apply(accepted)) {
            tracing::error!(error = %e, "could not write the client quotas");
            for o in outcome.iter_mut().filter(|o| o.is_ok()) {
                *o = Err((code::KAFKA_STORAGE_ERROR, format!("the quotas could not be written: {e}")));
            }
        }
    }
    for (entry, o) in req.entries.iter().zip(outcome) {
        let mut e = alter_client_quotas_response::EntryData::default();
        e.entity = entry
            .entity
            .iter()
            .map(|d| {
                let mut x = alter_client_quotas_response::EntityData::default();
                x.entity_type = d.entity_type.clone();
                x.entity_name = d.entity_name.clone();
                x
            })
            .collect();
        if let Err((error, message)) = o {
            e.error_code = error;
            e.error_message = Some(StrBytes::from_string(message));
        }
        r.entries.push(e);
    }
    r
}
