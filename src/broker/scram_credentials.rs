//! DescribeUserScramCredentials and AlterUserScramCredentials: the SCRAM
//! users kept in the data directory (`security::Credentials`). Errors per
//! user as Kafka gives them; a user with any bad change gets none of its
//! changes, the other users get theirs. DESCRIBE (ALTER) on the cluster is
//! needed to describe (alter) them.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::protocol::code;
use crate::security::acl::Operation;
use crate::security::Context;
use crate::security::credentials::{check_upsert, Change};
use crate::security::scram::ScramCredential;
use crate::security::Mechanism;

pub fn describe(broker: &Broker, ctx: &Context, req: DescribeUserScramCredentialsRequest, _version: i16) -> DescribeUserScramCredentialsResponse {
    let mut r = DescribeUserScramCredentialsResponse::default();
    if !broker.authorize_cluster(ctx, Operation::Describe) {
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        r.error_message = Some(StrBytes::from_static_str(code::denied(code::CLUSTER_AUTHORIZATION_FAILED)));
        return r;
    }
    let wanted: Vec<String> = match req.users {
        Some(users) if !users.is_empty() => users.into_iter().map(|u| u.name.to_string()).collect(),
        // Null or empty: every user with a credential.
        _ => broker.credentials.users(),
    };
    for (i, user) in wanted.iter().enumerate() {
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(user.clone());
        let (error, message) = if wanted.iter().filter(|u| *u == user).count() > 1 {
            if wanted[..i].contains(user) {
                continue;
            }
            (code::DUPLICATE_RESOURCE, format!("cannot describe the SCRAM credentials of user {user:?} twice in one request"))
        } else {
            match broker.credentials.describe(user) {
                Some(infos) => {
                    result.credential_infos = infos
                        .into_iter()
                        .map(|(m, iterations)| {
                            let mut c = CredentialInfo::default();
                            c.mechanism = m.scram_code();
                            c.iterations = iterations as i32;
                            c
                        })
                        .collect();
                    (code::NONE, String::new())
                }
                None => (code::RESOURCE_NOT_FOUND, format!("user {user:?} has no SCRAM credentials")),
            }
        };
        result.error_code = error;
        result.error_message = (error != code::NONE).then(|| StrBytes::from_string(message));
        r.results.push(result);
    }
    r
}

pub fn alter(broker: &Broker, ctx: &Context, req: AlterUserScramCredentialsRequest, _version: i16) -> AlterUserScramCredentialsResponse {
    if !broker.authorize_cluster(ctx, Operation::Alter) {
        // Every user named gets the error, once.
        let mut r = AlterUserScramCredentialsResponse::default();
        let users = req.deletions.iter().map(|d| d.name.as_str()).chain(req.upsertions.iter().map(|u| u.name.as_str()));
        for user in users {
            if r.results.iter().any(|x| x.user.as_str() == user) {
                continue;
            }
            let mut result = AlterUserScramCredentialsResult::default();
            result.user = StrBytes::from_string(user.to_string());
            result.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
            result.error_message = Some(StrBytes::from_static_str(code::denied(code::CLUSTER_AUTHORIZATION_FAILED)));
            r.results.push(result);
        }
        return r;
    }
    // Each user's changes, checked; the first error of a user wins.
    let mut users: BTreeMap<String, Result<Vec<Change>, (i16, String)>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut seen: Vec<(String, i8)> = Vec::new();
    let mut add = |user: String, mechanism_code: i8, change: Result<Change, (i16, String)>| {
        if !users.contains_key(&user) {
            order.push(user.clone());
        }
        let duplicate = seen.contains(&(user.clone(), mechanism_code));
        seen.push((user.clone(), mechanism_code));
        let entry = users.entry(user.clone()).or_insert_with(|| Ok(Vec::new()));
        let Ok(changes) = entry else { return };
        match change {
            _ if duplicate => *entry = Err((code::DUPLICATE_RESOURCE, format!("a SCRAM mechanism of user {user:?} is changed twice in one request"))),
            Ok(c) => changes.push(c),
            Err(e) => *entry = Err(e),
        }
    };
    let mechanism = |code_: i8| Mechanism::from_scram_code(code_).ok_or((code::UNSUPPORTED_SASL_MECHANISM, format!("unknown SCRAM mechanism {code_}")));
    for d in req.deletions {
        let user = d.name.to_string();
        let change = mechanism(d.mechanism).and_then(|m| match broker.credentials.get(&user, m) {
            Some(_) => Ok(Change::Delete { user: user.clone(), mechanism: m }),
            None => Err((code::RESOURCE_NOT_FOUND, format!("user {user:?} has no {} credential to delete", m.name()))),
        });
        add(user, d.mechanism, change);
    }
    for u in req.upsertions {
        let user = u.name.to_string();
        let change = mechanism(u.mechanism).and_then(|m| {
            check_upsert(&user, m, u.iterations, &u.salt, &u.salted_password).map_err(|e| (code::UNACCEPTABLE_CREDENTIAL, e))?;
            let credential = ScramCredential::from_salted(m, u.salt.to_vec(), u.iterations as u32, &u.salted_password);
            Ok(Change::Upsert { user: user.clone(), mechanism: m, credential })
        });
        add(user, u.mechanism, change);
    }
    let mut to_apply = Vec::new();
    let mut applied_users = Vec::new();
    for (user, changes) in &mut users {
        if let Ok(c) = changes {
            to_apply.append(c);
            applied_users.push(user.clone());
        }
    }
    let stored = if to_apply.is_empty() { Ok(()) } else { crate::security::off_runtime(|| broker.credentials.apply(to_apply)) };
    if let Err(e) = &stored {
        tracing::error!(error = %e, "could not write the SCRAM credentials file");
    } else if !applied_users.is_empty() {
        tracing::info!(users = ?applied_users, "changed SCRAM credentials");
    }
    let mut r = AlterUserScramCredentialsResponse::default();
    for user in order {
        let mut result = AlterUserScramCredentialsResult::default();
        match (&users[&user], &stored) {
            (Err((c, m)), _) => {
                result.error_code = *c;
                result.error_message = Some(StrBytes::from_string(m.clone()));
            }
            (Ok(_), Err(e)) => {
                result.error_code = code::KAFKA_STORAGE_ERROR;
                result.error_message = Some(StrBytes::from_string(format!("could not store the credentials: {e}")));
            }
            (Ok(_), Ok(())) => {}
        }
        result.user = StrBytes::from_string(user);
        r.results.push(result);
    }
    r
}
