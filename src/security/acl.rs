//! ACLs and the authorizer (Kafka's `StandardAuthorizer` semantics): a
//! binding is a resource pattern (type, LITERAL or PREFIXED, name; the
//! literal name `*` matches every name) and an entry (principal, `User:*`
//! for everyone; host, `*` for any; operation; ALLOW or DENY).
//!
//! A request is allowed when the principal is a super user, or some ALLOW
//! binding matches and no DENY binding does; when no binding at all names
//! the resource, `allow.everyone.if.no.acl.found` decides. ALL matches every
//! operation; an ALLOW of READ, WRITE, DELETE or ALTER also allows
//! DESCRIBE, and an ALLOW of ALTER_CONFIGS allows DESCRIBE_CONFIGS (a DENY
//! implies nothing).
//!
//! The bindings live in `<data_dir>/acls.json` (storage-format.md §17),
//! rewritten atomically on every change, and in memory in an index by
//! resource type and name, read under a lock without allocating.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

pub const FILE: &str = "acls.json";
/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name, or a host, that matches every one.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The authorizer class names accepted in `authorizer.class.name`.
pub const AUTHORIZER_CLASSES: [&str; 2] = ["org.apache.kafka.metadata.authorizer.StandardAuthorizer", "kafka.security.authorizer.AclAuthorizer"];

/// Declares a Kafka enum: its variants, wire codes and names.
macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }

            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }
        }
    };
}

kafka_enum!(
    /// Kafka's `ResourceType` (those Eddy has).
    ResourceType { Topic = 2 "TOPIC", Group = 3 "GROUP", Cluster = 4 "CLUSTER", TransactionalId = 5 "TRANSACTIONAL_ID" }
);
kafka_enum!(
    /// Kafka's `PatternType` of a stored binding.
    PatternType { Literal = 3 "LITERAL", Prefixed = 4 "PREFIXED" }
);
kafka_enum!(
    /// Kafka's `AclOperation`.
    Operation {
        All = 2 "ALL", Read = 3 "READ", Write = 4 "WRITE", Create = 5 "CREATE", Delete = 6 "DELETE", Alter = 7 "ALTER",
        Describe = 8 "DESCRIBE", ClusterAction = 9 "CLUSTER_ACTION", DescribeConfigs = 10 "DESCRIBE_CONFIGS",
        AlterConfigs = 11 "ALTER_CONFIGS", IdempotentWrite = 12 "IDEMPOTENT_WRITE", CreateTokens = 13 "CREATE_TOKENS",
        DescribeTokens = 14 "DESCRIBE_TOKENS", TwoPhaseCommit = 15 "TWO_PHASE_COMMIT",
    }
);
kafka_enum!(
    /// Kafka's `AclPermissionType`.
    Permission { Deny = 2 "DENY", Allow = 3 "ALLOW" }
);

/// The `ANY` code of Kafka's enums in filters; `MATCH` of pattern types.
pub const ANY: i8 = 1;
pub const MATCH: i8 = 2;

impl ResourceType {
    fn slot(self) -> usize {
        self as usize
    }

    /// The operations a resource of this type has (Kafka's lists, which
    /// authorized-operations answers are made of).
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[Read, Write, Create, Describe, Delete, Alter, DescribeConfigs, AlterConfigs],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter, Describe],
            ResourceType::TransactionalId => &[Describe, Write, TwoPhaseCommit],
        }
    }
}

/// One ACL binding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Binding {
    /// A binding from CreateAcls codes, or why it is invalid (Kafka's
    /// INVALID_REQUEST messages).
    pub fn from_codes(resource_type: i8, name: &str, pattern_type: i8, principal: &str, host: &str, operation: i8, permission: i8) -> Result<Binding, String> {
        let resource_type = ResourceType::from_code(resource_type).ok_or_else(|| format!("invalid resource type {resource_type}"))?;
        let pattern_type = PatternType::from_code(pattern_type).ok_or_else(|| format!("invalid pattern type {pattern_type}: use LITERAL (3) or PREFIXED (4)"))?;
        let operation = Operation::from_code(operation).ok_or_else(|| format!("invalid operation {operation}"))?;
        let permission = Permission::from_code(permission).ok_or_else(|| format!("invalid permission type {permission}: use DENY (2) or ALLOW (3)"))?;
        let b = Binding { resource_type, name: name.to_string(), pattern_type, principal: principal.to_string(), host: host.to_string(), operation, permission };
        b.check()?;
        Ok(b)
    }

    /// What every binding must satisfy, whether created or loaded.
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the resource name must not be empty".into());
        }
        if !self.principal.contains(':') {
            return Err(format!("could not parse principal {:?}: no colon separates the principal type from its name", self.principal));
        }
        if self.host.is_empty() {
            return Err("the host must not be empty: use * for any host".into());
        }
        Ok(())
    }

    fn host_match(&self) -> HostMatch {
        if self.host == WILDCARD {
            HostMatch::Any
        } else {
            // Kafka compares with the client's address as text; a host name
            // never equals one.
            self.host.parse().map_or(HostMatch::Never, HostMatch::Ip)
        }
    }
}

/// A DescribeAcls / DeleteAcls filter (Kafka's `AclBindingFilter`); `None`
/// fields match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternFilter {
    /// ANY: every pattern type; a name must be equal.
    Any,
    /// MATCH: the patterns that would apply to a resource of that name.
    Match,
    Exactly(PatternType),
}

impl Filter {
    /// A filter from request codes (ANY = 1 everywhere, MATCH = 2 for the
    /// pattern type), or why it is invalid.
    pub fn from_codes(resource_type: i8, name: Option<&str>, pattern_type: i8, principal: Option<&str>, host: Option<&str>, operation: i8, permission: i8) -> Result<Filter, String> {
        let resource_type = match resource_type {
            ANY => None,
            c => Some(ResourceType::from_code(c).ok_or_else(|| format!("invalid resource type filter {c}"))?),
        };
        let pattern = match pattern_type {
            ANY => PatternFilter::Any,
            MATCH => PatternFilter::Match,
            c => PatternFilter::Exactly(PatternType::from_code(c).ok_or_else(|| format!("invalid pattern type filter {c}"))?),
        };
        let operation = match operation {
            ANY => None,
            c => Some(Operation::from_code(c).ok_or_else(|| format!("invalid operation filter {c}"))?),
        };
        let permission = match permission {
            ANY => None,
            c => Some(Permission::from_code(c).ok_or_else(|| format!("invalid permission type filter {c}"))?),
        };
        Ok(Filter { resource_type, name: name.map(str::to_string), pattern, principal: principal.map(str::to_string), host: host.map(str::to_string), operation, permission })
    }

    pub fn matches(&self, b: &Binding) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.pattern_matches(b)
            && same(&self.principal, &b.principal)
            && same(&self.host, &b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }

    fn pattern_matches(&self, b: &Binding) -> bool {
        match (self.pattern, self.name.as_deref()) {
            (PatternFilter::Exactly(t), _) if t != b.pattern_type => false,
            (_, None) => true,
            (PatternFilter::Any | PatternFilter::Exactly(_), Some(name)) => name == b.name,
            (PatternFilter::Match, Some(name)) => match b.pattern_type {
                PatternType::Literal => name == b.name || b.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(b.name.as_str()),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum HostMatch {
    Any,
    Ip(IpAddr),
    Never,
}

/// A binding's entry as the index keeps it.
struct Entry {
    principal: Box<str>,
    host: HostMatch,
    operation: Operation,
    allow: bool,
}

impl Entry {
    /// Some(true) if this entry allows the action, Some(false) if it denies
    /// it, None if it does not apply.
    fn decide(&self, principal: &str, host: IpAddr, op: Operation) -> Option<bool> {
        if &*self.principal != principal && &*self.principal != WILDCARD_PRINCIPAL {
            return None;
        }
        match self.host {
            HostMatch::Any => {}
            HostMatch::Ip(ip) if ip == host => {}
            _ => return None,
        }
        let applies = self.operation == Operation::All
            || self.operation == op
            || (self.allow && op == Operation::Describe && matches!(self.operation, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
            || (self.allow && op == Operation::DescribeConfigs && self.operation == Operation::AlterConfigs);
        applies.then_some(self.allow)
    }
}

/// The bindings of one resource type, by how they name resources.
#[derive(Default)]
struct TypeIndex {
    literal: HashMap<String, Vec<Entry>>,
    /// Literal `*`.
    wildcard: Vec<Entry>,
    prefixed: Vec<(String, Vec<Entry>)>,
}

#[derive(Default)]
struct Index {
    by_type: [TypeIndex; 4],
}

impl Index {
    fn build(bindings: &BTreeSet<Binding>) -> Index {
        let mut index = Index::default();
        for b in bindings {
            let t = &mut index.by_type[b.resource_type.slot()];
            let entry = Entry { principal: b.principal.as_str().into(), host: b.host_match(), operation: b.operation, allow: b.permission == Permission::Allow };
            match b.pattern_type {
                PatternType::Literal if b.name == WILDCARD => t.wildcard.push(entry),
                PatternType::Literal => t.literal.entry(b.name.clone()).or_default().push(entry),
                PatternType::Prefixed => match t.prefixed.iter_mut().find(|(p, _)| *p == b.name) {
                    Some((_, v)) => v.push(entry),
                    None => t.prefixed.push((b.name.clone(), vec![entry])),
                },
            }
        }
        index
    }

    /// Some(allowed) from the entries naming the resource, None if none does.
    fn decide(&self, principal: &str, host: IpAddr, op: Operation, rt: ResourceType, name: &str) -> Option<bool> {
        let t = &self.by_type[rt.slot()];
        let literal = t.literal.get(name).map(Vec::as_slice).unwrap_or_default();
        let prefixed = t.prefixed.iter().filter(|(p, _)| name.starts_with(p.as_str())).flat_map(|(_, v)| v);
        let mut named = false;
        let mut allowed = false;
        for e in literal.iter().chain(&t.wildcard).chain(prefixed) {
            named = true;
            match e.decide(principal, host, op) {
                Some(false) => return Some(false),
                Some(true) => allowed = true,
                None => {}
            }
        }
        named.then_some(allowed)
    }
}

/// The authorizer: the settings, the bindings and their file.
pub struct Authorizer {
    path: PathBuf,
    super_users: Vec<String>,
    allow_if_no_acl: bool,
    state: RwLock<(BTreeSet<Binding>, Index)>,
    /// Serializes changes (compute, write the file, publish).
    writing: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    acls: Vec<StoredBinding>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredBinding {
    resource_type: String,
    pattern_type: String,
    name: String,
    principal: String,
    host: String,
    operation: String,
    permission: String,
}

impl Authorizer {
    /// Loads `<data_dir>/acls.json` (none yet: no bindings). A file that
    /// does not parse, or holds a value out of range, is an error naming
    /// the file and the reason.
    pub fn open(data_dir: &Path, super_users: Vec<String>, allow_if_no_acl: bool) -> std::io::Result<Authorizer> {
        let path = data_dir.join(FILE);
        let bindings = match super::read_json(&path)? {
            Some(file) => decode(file).map_err(|reason| super::bad_file(&path, reason))?,
            None => BTreeSet::new(),
        };
        let index = Index::build(&bindings);
        Ok(Authorizer { path, super_users, allow_if_no_acl, state: RwLock::new((bindings, index)), writing: Mutex::new(()) })
    }

    /// Whether `principal` (`User:name`) from `host` may do `op` on the
    /// resource.
    pub fn authorize(&self, principal: &str, host: IpAddr, op: Operation, rt: ResourceType, name: &str) -> bool {
        if self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let host = host.to_canonical();
        self.state.read().1.decide(principal, host, op, rt, name).unwrap_or(self.allow_if_no_acl)
    }

    /// Whether `principal` may do `op` on some resource of type `rt`
    /// (Kafka's `authorizeByResourceType`): an ALLOW binding of the
    /// principal for `op` (or ALL) whose pattern no DENY binding covers.
    pub fn authorize_any(&self, principal: &str, host: IpAddr, op: Operation, rt: ResourceType) -> bool {
        // As Kafka: a literal name no binding is likely to name settles
        // super users and `allow.everyone.if.no.acl.found`.
        if self.authorize(principal, host, op, rt, "hardcode") {
            return true;
        }
        let host = host.to_canonical();
        let state = self.state.read();
        let host_ok = |b: &Binding| match b.host_match() {
            HostMatch::Any => true,
            HostMatch::Ip(ip) => ip == host,
            HostMatch::Never => false,
        };
        let relevant = state.0.iter().filter(|b| b.resource_type == rt && (b.principal == principal || b.principal == WILDCARD_PRINCIPAL) && host_ok(b) && (b.operation == op || b.operation == Operation::All));
        let (deny, allow): (Vec<&Binding>, Vec<&Binding>) = relevant.partition(|b| b.permission == Permission::Deny);
        if deny.iter().any(|b| b.pattern_type == PatternType::Literal && b.name == WILDCARD) {
            return false;
        }
        if allow.iter().any(|b| b.pattern_type == PatternType::Literal && b.name == WILDCARD) {
            return true;
        }
        allow.iter().any(|a| {
            let literal_denied = a.pattern_type == PatternType::Literal && deny.iter().any(|d| d.pattern_type == PatternType::Literal && d.name == a.name);
            let prefix_denied = deny.iter().any(|d| d.pattern_type == PatternType::Prefixed && a.name.starts_with(d.name.as_str()));
            !literal_denied && !prefix_denied
        })
    }

    /// The bit set of the operations `principal` may do on the resource
    /// (`AclOperation` codes as bits), for authorized-operations answers.
    pub fn operations(&self, principal: &str, host: IpAddr, rt: ResourceType, name: &str) -> i32 {
        rt.operations().iter().filter(|op| self.authorize(principal, host, **op, rt, name)).fold(0, |bits, op| bits | 1 << op.code())
    }

    /// The bindings a filter matches.
    pub fn list(&self, filter: &Filter) -> Vec<Binding> {
        self.state.read().0.iter().filter(|b| filter.matches(b)).cloned().collect()
    }

    /// Adds bindings (those that exist already stay as they are): durably
    /// on disk, then in memory.
    pub fn create(&self, bindings: Vec<Binding>) -> std::io::Result<()> {
        self.change(|set| set.extend(bindings))
    }

    /// Removes what each filter matches; returns each filter's bindings.
    pub fn delete(&self, filters: &[Filter]) -> std::io::Result<Vec<Vec<Binding>>> {
        let mut removed = Vec::new();
        self.change(|set| {
            removed = filters.iter().map(|f| set.iter().filter(|b| f.matches(b)).cloned().collect()).collect();
            set.retain(|b| !filters.iter().any(|f| f.matches(b)));
        })?;
        Ok(removed)
    }

    fn change(&self, f: impl FnOnce(&mut BTreeSet<Binding>)) -> std::io::Result<()> {
        let _writing = self.writing.lock();
        let mut next = self.state.read().0.clone();
        f(&mut next);
        if next == self.state.read().0 {
            return Ok(());
        }
        self.write(&next)?;
        let index = Index::build(&next);
        *self.state.write() = (next, index);
        Ok(())
    }

    /// Rewrites the file: a temporary file, fsync, rename, fsync of the directory.
    fn write(&self, bindings: &BTreeSet<Binding>) -> std::io::Result<()> {
        let file = FileFormat {
            version: 1,
            acls: bindings
                .iter()
                .map(|b| StoredBinding {
                    resource_type: b.resource_type.name().into(),
                    pattern_type: b.pattern_type.name().into(),
                    name: b.name.clone(),
                    principal: b.principal.clone(),
                    host: b.host.clone(),
                    operation: b.operation.name().into(),
                    permission: b.permission.name().into(),
                })
                .collect(),
        };
        super::write_json(&self.path, &file)
    }
}

fn decode(file: FileFormat) -> Result<BTreeSet<Binding>, String> {
    if file.version != 1 {
        return Err(format!("unknown version {}", file.version));
    }
    let mut out = BTreeSet::new();
    for (i, s) in file.acls.into_iter().enumerate() {
        let field = |what: &str, v: &str| format!("acl {i}: unknown {what} {v:?}");
        let b = Binding {
            resource_type: ResourceType::parse(&s.resource_type).ok_or_else(|| field("resource_type", &s.resource_type))?,
            pattern_type: PatternType::parse(&s.pattern_type).ok_or_else(|| field("pattern_type", &s.pattern_type))?,
            operation: Operation::parse(&s.operation).ok_or_else(|| field("operation", &s.operation))?,
            permission: Permission::parse(&s.permission).ok_or_else(|| field("permission", &s.permission))?,
            name: s.name,
            principal: s.principal,
            host: s.host,
        };
        b.check().map_err(|e| format!("acl {i}: {e}"))?;
        out.insert(b);
    }
    Ok(out)
}

/// Parses `super.users`: `User:a;User:b` (empty: none).
pub fn parse_super_users(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if !p.contains(':') {
            return Err(format!("{p:?} is not a principal: write User:NAME"));
        }
        out.push(p.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    fn b(rt: ResourceType, pt: PatternType, name: &str, principal: &str, host: &str, op: Operation, perm: Permission) -> Binding {
        Binding { resource_type: rt, name: name.into(), pattern_type: pt, principal: principal.into(), host: host.into(), operation: op, permission: perm }
    }

    fn allow(name: &str, principal: &str, op: Operation) -> Binding {
        b(ResourceType::Topic, PatternType::Literal, name, principal, "*", op, Permission::Allow)
    }

    fn with(bindings: Vec<Binding>, super_users: &[&str], allow_if_no_acl: bool) -> (tempfile::TempDir, Authorizer) {
        let dir = tempfile::tempdir().unwrap();
        let a = Authorizer::open(dir.path(), super_users.iter().map(|s| s.to_string()).collect(), allow_if_no_acl).unwrap();
        a.create(bindings).unwrap();
        (dir, a)
    }

    use Operation::*;
    use ResourceType::*;

    #[test]
    fn deny_beats_allow_and_all_matches_every_operation() {
        let (_d, a) = with(vec![allow("t", "User:alice", All), b(Topic, PatternType::Literal, "t", "User:alice", "*", Write, Permission::Deny)], &[], false);
        assert!(a.authorize("User:alice", LOCAL, Read, Topic, "t"));
        assert!(a.authorize("User:alice", LOCAL, AlterConfigs, Topic, "t"));
        assert!(!a.authorize("User:alice", LOCAL, Write, Topic, "t"), "a DENY of WRITE beats ALLOW ALL");
        assert!(!a.authorize("User:bob", LOCAL, Read, Topic, "t"));
        // A DENY on the wildcard principal beats a user's ALLOW.
        let (_d, a) = with(vec![allow("t", "User:alice", Read), b(Topic, PatternType::Prefixed, "t", "User:*", "*", All, Permission::Deny)], &[], false);
        assert!(!a.authorize("User:alice", LOCAL, Read, Topic, "t"));
    }

    #[test]
    fn prefixed_and_wildcard_patterns() {
        let (_d, a) = with(
            vec![
                b(Topic, PatternType::Prefixed, "orders-", "User:alice", "*", Read, Permission::Allow),
                b(Topic, PatternType::Literal, "*", "User:bob", "*", Write, Permission::Allow),
                b(Group, PatternType::Literal, "*", "User:*", "*", Read, Permission::Allow),
            ],
            &[],
            false,
        );
        assert!(a.authorize("User:alice", LOCAL, Read, Topic, "orders-eu"));
        assert!(a.authorize("User:alice", LOCAL, Read, Topic, "orders-"));
        assert!(!a.authorize("User:alice", LOCAL, Read, Topic, "orders"));
        assert!(!a.authorize("User:bob", LOCAL, Write, Group, "anything"), "resource types are separate");
        assert!(a.authorize("User:bob", LOCAL, Write, Topic, "anything"));
        assert!(!a.authorize("User:bob", LOCAL, Read, Topic, "anything"));
        assert!(a.authorize("User:carol", LOCAL, Read, Group, "g"), "User:* matches everyone");
        // A literal "*" is a wildcard only as a literal name; a prefixed "*" is a prefix.
        let (_d, a) = with(vec![b(Topic, PatternType::Prefixed, "*", "User:alice", "*", Read, Permission::Allow)], &[], false);
        assert!(!a.authorize("User:alice", LOCAL, Read, Topic, "t"));
        assert!(a.authorize("User:alice", LOCAL, Read, Topic, "*t"));
    }

    #[test]
    fn implied_operations_come_from_allows_only() {
        let (_d, a) = with(vec![allow("r", "User:u", Read), allow("w", "User:u", Write), allow("d", "User:u", Delete), allow("a", "User:u", Alter), allow("c", "User:u", AlterConfigs), allow("x", "User:u", Create)], &[], false);
        for t in ["r", "w", "d", "a"] {
            assert!(a.authorize("User:u", LOCAL, Describe, Topic, t), "{t}");
        }
        assert!(!a.authorize("User:u", LOCAL, Describe, Topic, "x"), "CREATE does not imply DESCRIBE");
        assert!(!a.authorize("User:u", LOCAL, Describe, Topic, "c"));
        assert!(a.authorize("User:u", LOCAL, DescribeConfigs, Topic, "c"));
        assert!(!a.authorize("User:u", LOCAL, Read, Topic, "w"), "WRITE does not imply READ");
        // A DENY of READ does not deny DESCRIBE.
        let (_d, a) = with(vec![allow("t", "User:u", Describe), b(Topic, PatternType::Literal, "t", "User:u", "*", Read, Permission::Deny)], &[], false);
        assert!(a.authorize("User:u", LOCAL, Describe, Topic, "t"));
        assert!(!a.authorize("User:u", LOCAL, Read, Topic, "t"));
    }

    #[test]
    fn hosts_super_users_and_no_acl_default() {
        let (_d, a) = with(vec![b(Topic, PatternType::Literal, "t", "User:u", "127.0.0.1", Read, Permission::Allow), b(Topic, PatternType::Literal, "h", "User:u", "localhost", Read, Permission::Allow)], &["User:admin"], false);
        assert!(a.authorize("User:u", LOCAL, Read, Topic, "t"));
        assert!(!a.authorize("User:u", OTHER, Read, Topic, "t"));
        // An IPv4 client seen through an IPv6 socket is the same host.
        assert!(a.authorize("User:u", "::ffff:127.0.0.1".parse().unwrap(), Read, Topic, "t"));
        assert!(!a.authorize("User:u", LOCAL, Read, Topic, "h"), "a host name never matches an address");
        assert!(a.authorize("User:admin", OTHER, Alter, Cluster, CLUSTER_NAME), "super users bypass");
        assert!(!a.authorize("User:u", LOCAL, Read, Topic, "nobody-named-this"));
        // allow.everyone.if.no.acl.found: only resources no binding names at all.
        let (_d, a) = with(vec![allow("t", "User:alice", Read)], &[], true);
        assert!(a.authorize("User:bob", LOCAL, Write, Topic, "other"));
        assert!(!a.authorize("User:bob", LOCAL, Read, Topic, "t"));
        assert_eq!(parse_super_users(" User:a ;User:b;").unwrap(), ["User:a", "User:b"]);
        assert!(parse_super_users("admin").is_err());
    }

    #[test]
    fn authorize_any_and_operation_bits() {
        let (_d, a) = with(vec![b(Topic, PatternType::Prefixed, "app-", "User:u", "*", Write, Permission::Allow), b(Topic, PatternType::Prefixed, "app", "User:u", "*", Write, Permission::Deny)], &[], false);
        assert!(!a.authorize_any("User:u", LOCAL, Write, Topic), "the allowed prefix is covered by a deny");
        let (_d, a) = with(vec![allow("t", "User:u", Write), allow("t", "User:u", Read)], &[], false);
        assert!(a.authorize_any("User:u", LOCAL, Write, Topic));
        assert!(!a.authorize_any("User:v", LOCAL, Write, Topic));
        let bits = a.operations("User:u", LOCAL, Topic, "t");
        assert_eq!(bits, 1 << 3 | 1 << 4 | 1 << 8, "READ, WRITE and the DESCRIBE they imply");
    }

    #[test]
    fn filters_any_match_and_exact() {
        let lit = allow("orders", "User:u", Read);
        let star = allow("*", "User:u", Read);
        let pre = b(Topic, PatternType::Prefixed, "ord", "User:u", "*", Read, Permission::Allow);
        let f = |pt: i8, name: Option<&str>| Filter::from_codes(ANY, name, pt, None, None, ANY, ANY).unwrap();
        let hits = |f: Filter| [&lit, &star, &pre].iter().filter(|x| f.matches(x)).count();
        assert_eq!(hits(f(ANY, None)), 3);
        assert_eq!(hits(f(ANY, Some("orders"))), 1);
        assert_eq!(hits(f(MATCH, Some("orders"))), 3);
        assert_eq!(hits(f(MATCH, Some("other"))), 1);
        assert_eq!(hits(f(4, None)), 1);
        assert_eq!(hits(f(3, Some("ord"))), 0);
        let by_principal = Filter::from_codes(2, None, ANY, Some("User:v"), None, ANY, ANY).unwrap();
        assert!(!by_principal.matches(&lit));
        assert!(Filter::from_codes(0, None, ANY, None, None, ANY, ANY).is_err());
        assert!(Filter::from_codes(ANY, None, 0, None, None, ANY, ANY).is_err());
        assert!(Binding::from_codes(2, "t", MATCH, "User:u", "*", 3, 3).is_err(), "MATCH is a filter, not a pattern");
        assert!(Binding::from_codes(2, "t", 3, "alice", "*", 3, 3).is_err());
        assert!(Binding::from_codes(2, "", 3, "User:u", "*", 3, 3).is_err());
        assert!(Binding::from_codes(2, "t", 3, "User:u", "*", ANY, 3).is_err());
        assert!(Binding::from_codes(2, "t", 3, "User:u", "*", 3, ANY).is_err());
    }

    #[test]
    fn bindings_survive_reopen_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authorizer::open(dir.path(), Vec::new(), false).unwrap();
        a.create(vec![allow("t", "User:u", Read), b(Group, PatternType::Prefixed, "g", "User:*", "10.0.0.7", Delete, Permission::Deny)]).unwrap();
        let removed = a.delete(&[Filter::from_codes(2, None, ANY, None, None, ANY, ANY).unwrap()]).unwrap();
        assert_eq!(removed, vec![vec![allow("t", "User:u", Read)]]);
        a.create(vec![allow("u", "User:u", Write)]).unwrap();
        drop(a);
        let a = Authorizer::open(dir.path(), Vec::new(), false).unwrap();
        let all = a.list(&Filter::from_codes(ANY, None, ANY, None, None, ANY, ANY).unwrap());
        assert_eq!(all.len(), 2);
        assert!(a.authorize("User:u", LOCAL, Write, Topic, "u"));
        assert!(!a.authorize("User:u", LOCAL, Read, Topic, "t"));
        let path = dir.path().join(FILE);
        for (text, reason) in [
            ("{\"version\":1,\"acls\":[", "EOF"),
            ("{\"version\":2,\"acls\":[]}", "unknown version 2"),
            (r#"{"version":1,"acls":[{"resource_type":"TOPIC","pattern_type":"MATCH","name":"t","principal":"User:u","host":"*","operation":"READ","permission":"ALLOW"}]}"#, "pattern_type"),
            (r#"{"version":1,"acls":[{"resource_type":"TOPIC","pattern_type":"LITERAL","name":"t","principal":"u","host":"*","operation":"READ","permission":"ALLOW"}]}"#, "principal"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Authorizer::open(dir.path(), Vec::new(), false).err().expect("a bad file is refused").to_string();
            assert!(e.contains("acls.json") && e.contains(reason), "{e}");
        }
    }
}
