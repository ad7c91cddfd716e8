//! Authorization checks for every API (`Broker::authorize` and friends),
//! and the ACL APIs: CreateAcls, DescribeAcls, DeleteAcls. Without an
//! authorizer everything is allowed and the ACL APIs answer
//! SECURITY_DISABLED, as Kafka does.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::protocol::code;
use crate::security::acl::{Authorizer, Binding, Filter, Operation, ResourceType, CLUSTER_NAME};
use crate::security::Context;

impl Broker {
    /// Whether the request's principal, from its address, may do `op` on
    /// the resource. Always, without an authorizer.
    pub fn authorize(&self, ctx: &Context, op: Operation, rt: ResourceType, name: &str) -> bool {
        match &self.authorizer {
            None => true,
            Some(a) => a.authorize(&ctx.principal, ctx.peer.ip(), op, rt, name),
        }
    }

    /// `authorize` on the cluster resource.
    pub fn authorize_cluster(&self, ctx: &Context, op: Operation) -> bool {
        self.authorize(ctx, op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the principal may do `op` on some resource of type `rt`.
    pub fn authorize_any(&self, ctx: &Context, op: Operation, rt: ResourceType) -> bool {
        match &self.authorizer {
            None => true,
            Some(a) => a.authorize_any(&ctx.principal, ctx.peer.ip(), op, rt),
        }
    }

    /// An authorized-operations answer: the bits of what the principal may
    /// do on the resource, or `i32::MIN` when the request did not ask.
    pub fn authorized_operations(&self, ctx: &Context, requested: bool, rt: ResourceType, name: &str) -> i32 {
        match &self.authorizer {
            _ if !requested => i32::MIN,
            None => rt.operations().iter().fold(0, |bits, op| bits | 1 << op.code()),
            Some(a) => a.operations(&ctx.principal, ctx.peer.ip(), rt, name),
        }
    }

    /// The cluster's authorized operations (Metadata, DescribeCluster): Kafka
    /// answers 0 to a principal that may not DESCRIBE the cluster.
    pub fn cluster_operations(&self, ctx: &Context, requested: bool) -> i32 {
        match requested {
            true if !self.authorize_cluster(ctx, Operation::Describe) => 0,
            requested => self.authorized_operations(ctx, requested, ResourceType::Cluster, crate::security::acl::CLUSTER_NAME),
        }
    }

    /// The authorizer if the principal may change (`Alter`) or read
    /// (`Describe`) ACLs, else the error code and message to answer.
    fn acl_admin(&self, ctx: &Context, op: Operation) -> Result<&Authorizer, (i16, &'static str)> {
        match &self.authorizer {
            None => Err((code::SECURITY_DISABLED, "No Authorizer is configured.")),
            Some(_) if !self.authorize_cluster(ctx, op) => Err((code::CLUSTER_AUTHORIZATION_FAILED, code::denied(code::CLUSTER_AUTHORIZATION_FAILED))),
            Some(a) => Ok(a),
        }
    }
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

pub fn create(broker: &Broker, ctx: &Context, req: CreateAclsRequest, _version: i16) -> CreateAclsResponse {
    let failed = |code: i16, message: String| {
        let mut c = AclCreationResult::default();
        c.error_code = code;
        c.error_message = Some(s(&message));
        c
    };
    let mut r = CreateAclsResponse::default();
    let authorizer = match broker.acl_admin(ctx, Operation::Alter) {
        Ok(a) => a,
        Err((code, message)) => {
            r.results = req.creations.iter().map(|_| failed(code, message.to_string())).collect();
            return r;
        }
    };
    let parsed: Vec<Result<Binding, String>> =
        req.creations.iter().map(|c| Binding::from_codes(c.resource_type, &c.resource_name, c.resource_pattern_type, &c.principal, &c.host, c.operation, c.permission_type)).collect();
    let valid: Vec<Binding> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let count = valid.len();
    let stored = if valid.is_empty() { Ok(()) } else { crate::security::off_runtime(|| authorizer.create(valid)) };
    match &stored {
        Ok(()) if count > 0 => tracing::info!(by = %ctx.principal, acls = count, "created ACLs"),
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "could not write the ACLs file"),
    }
    r.results = parsed
        .into_iter()
        .map(|p| match (p, &stored) {
            (Err(reason), _) => failed(code::INVALID_REQUEST, reason),
            (Ok(_), Err(e)) => failed(code::UNKNOWN_SERVER_ERROR, format!("could not store the ACLs: {e}")),
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    r
}

pub fn describe(broker: &Broker, ctx: &Context, req: DescribeAclsRequest, _version: i16) -> DescribeAclsResponse {
    let mut r = DescribeAclsResponse::default();
    let filter = broker.acl_admin(ctx, Operation::Describe).map_err(|(code, m)| (code, m.to_string())).and_then(|a| {
        let f = Filter::from_codes(req.resource_type_filter, req.resource_name_filter.as_deref(), req.pattern_type_filter, req.principal_filter.as_deref(), req.host_filter.as_deref(), req.operation, req.permission_type);
        f.map(|f| (a, f)).map_err(|m| (code::INVALID_REQUEST, m))
    });
    let (authorizer, filter) = match filter {
        Ok(x) => x,
        Err((code, message)) => {
            r.error_code = code;
            r.error_message = Some(s(&message));
            return r;
        }
    };
    // Bindings come sorted by resource type, name and pattern type: one
    // resource's bindings are neighbours.
    for b in authorizer.list(&filter) {
        let same = r.resources.last().is_some_and(|x: &DescribeAclsResource| x.resource_type == b.resource_type.code() && x.resource_name.as_str() == b.name && x.pattern_type == b.pattern_type.code());
        if !same {
            let mut res = DescribeAclsResource::default();
            res.resource_type = b.resource_type.code();
            res.resource_name = s(&b.name);
            res.pattern_type = b.pattern_type.code();
            r.resources.push(res);
        }
        let mut d = AclDescription::default();
        d.principal = s(&b.principal);
        d.host = s(&b.host);
        d.operation = b.operation.code();
        d.permission_type = b.permission.code();
        if let Some(res) = r.resources.last_mut() {
            res.acls.push(d);
        }
    }
    r
}

pub fn delete(broker: &Broker, ctx: &Context, req: DeleteAclsRequest, _version: i16) -> DeleteAclsResponse {
    let failed = |code: i16, message: String| {
        let mut f = DeleteAclsFilterResult::default();
        f.error_code = code;
        f.error_message = Some(s(&message));
        f
    };
    let mut r = DeleteAclsResponse::default();
    let authorizer = match broker.acl_admin(ctx, Operation::Alter) {
        Ok(a) => a,
        Err((code, message)) => {
            r.filter_results = req.filters.iter().map(|_| failed(code, message.to_string())).collect();
            return r;
        }
    };
    let parsed: Vec<Result<Filter, String>> =
        req.filters.iter().map(|f| Filter::from_codes(f.resource_type_filter, f.resource_name_filter.as_deref(), f.pattern_type_filter, f.principal_filter.as_deref(), f.host_filter.as_deref(), f.operation, f.permission_type)).collect();
    let valid: Vec<Filter> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let deleted = crate::security::off_runtime(|| authorizer.delete(&valid));
    match &deleted {
        Ok(lists) => {
            let n: usize = lists.iter().map(Vec::len).sum();
            if n > 0 {
                tracing::info!(by = %ctx.principal, acls = n, "deleted ACLs");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not write the ACLs file"),
    }
    let mut lists = match &deleted {
        Ok(lists) => lists.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    r.filter_results = parsed
        .into_iter()
        .map(|p| match (p, &deleted) {
            (Err(reason), _) => failed(code::INVALID_REQUEST, reason),
            (Ok(_), Err(e)) => failed(code::UNKNOWN_SERVER_ERROR, format!("could not store the ACLs: {e}")),
            (Ok(_), Ok(_)) => {
                let mut f = DeleteAclsFilterResult::default();
                f.matching_acls = lists
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        let mut m = DeleteAclsMatchingAcl::default();
                        m.resource_type = b.resource_type.code();
                        m.resource_name = s(&b.name);
                        m.pattern_type = b.pattern_type.code();
                        m.principal = s(&b.principal);
                        m.host = s(&b.host);
                        m.operation = b.operation.code();
                        m.permission_type = b.permission.code();
                        m
                    })
                    .collect();
                f
            }
        })
        .collect();
    r
}
