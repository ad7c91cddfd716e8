//! The principal of a client certificate: its subject's distinguished
//! name as Kafka's default principal builder writes it, which is Java's
//! `X500Principal.getName()` (RFC 2253): the most specific RDN first
//! (the reverse of the encoded order), RDNs joined by `,`, the attributes of
//! a multi-valued RDN by `+`, the keywords CN, C, L, ST, O, OU, STREET, DC
//! and UID, any other attribute as its dotted OID with the DER value in hex
//! (`1.2.840.113549.1.9.1=#16...`), string values with `,=+<>#;"\` and
//! leading or trailing spaces escaped by a backslash.
//!
//! A small DER walk down to the subject (the certificate was already
//! verified by rustls, but nothing here trusts the bytes: every length is
//! checked, and a malformed name is an error, never a panic).

/// Why a subject could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct DerError(&'static str);

/// One DER element: its tag, its contents, and the whole encoding.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    encoded: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION: u8 = 0xa0;

/// Reads the element at the start of `input`; returns it and what follows.
fn element(input: &[u8]) -> Result<(Element<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError("truncated element"))?;
    if tag & 0x1f == 0x1f {
        return Err(DerError("multi-byte tag"));
    }
    let (&first, rest) = rest.split_first().ok_or(DerError("truncated length"))?;
    let (len, rest) = match first {
        0..=0x7f => (first as usize, rest),
        0x81..=0x84 => {
            let n = (first & 0x7f) as usize;
            if rest.len() < n {
                return Err(DerError("truncated length"));
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, &rest[n..])
        }
        _ => return Err(DerError("unsupported length form")),
    };
    if rest.len() < len {
        return Err(DerError("element longer than its container"));
    }
    let header = input.len() - rest.len();
    Ok((Element { tag, contents: &rest[..len], encoded: &input[..header + len] }, &rest[len..]))
}

/// Reads an element that must have `tag`.
fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(Element<'a>, &'a [u8]), DerError> {
    let (e, rest) = element(input)?;
    if e.tag != tag {
        return Err(DerError(what));
    }
    Ok((e, rest))
}

/// The subject `Name` of a DER certificate, as its encoded elements.
fn subject(cert: &[u8]) -> Result<&[u8], DerError> {
    let (certificate, _) = expect(cert, SEQUENCE, "not a certificate")?;
    let (tbs, _) = expect(certificate.contents, SEQUENCE, "no TBSCertificate")?;
    let mut rest = tbs.contents;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.1;
    }
    let (_serial, rest) = expect(rest, INTEGER, "no serial number")?;
    let (_signature, rest) = expect(rest, SEQUENCE, "no signature algorithm")?;
    let (_issuer, rest) = expect(rest, SEQUENCE, "no issuer")?;
    let (_validity, rest) = expect(rest, SEQUENCE, "no validity")?;
    let (subject, _) = expect(rest, SEQUENCE, "no subject")?;
    Ok(subject.contents)
}

/// The subject of a DER certificate in RFC 2253 form, as Java prints it.
pub fn subject_name(cert: &[u8]) -> Result<String, DerError> {
    name_rfc2253(subject(cert)?)
}

/// Kafka's principal for a client certificate: `User:<subject DN>`.
pub fn principal(cert: &[u8]) -> Result<String, DerError> {
    Ok(format!("User:{}", subject_name(cert)?))
}

/// The contents of a `Name` (a sequence of RDNs) in RFC 2253 form.
fn name_rfc2253(mut rdns: &[u8]) -> Result<String, DerError> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (rdn, rest) = expect(rdns, SET, "an RDN that is not a SET")?;
        rdns = rest;
        let mut avas = Vec::new();
        let mut inner = rdn.contents;
        while !inner.is_empty() {
            let (ava, rest) = expect(inner, SEQUENCE, "an attribute that is not a SEQUENCE")?;
            inner = rest;
            avas.push(attribute(ava.contents)?);
        }
        if avas.is_empty() {
            return Err(DerError("an empty RDN"));
        }
        parts.push(avas.join("+"));
    }
    parts.reverse();
    Ok(parts.join(","))
}

/// One `AttributeTypeAndValue` as `KEYWORD=value`.
fn attribute(ava: &[u8]) -> Result<String, DerError> {
    let (oid, rest) = expect(ava, OID, "an attribute type that is not an OID")?;
    let (value, rest) = element(rest)?;
    if !rest.is_empty() {
        return Err(DerError("extra bytes in an attribute"));
    }
    let dotted = oid_string(oid.contents)?;
    let keyword = keyword(&dotted);
    let mut out = String::with_capacity(dotted.len() + value.encoded.len() * 2 + 2);
    out.push_str(keyword.unwrap_or(&dotted));
    out.push('=');
    // Java: unknown attributes, and values that are not strings, in hex.
    if keyword.is_none() || !is_string(value.tag) {
        out.push('#');
        for b in value.encoded {
            out.push_str(&format!("{b:02x}"));
        }
    } else {
        out.push_str(&escaped(&String::from_utf8_lossy(value.contents)));
    }
    Ok(out)
}

/// Java's RFC 2253 keywords (the others print as OIDs).
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The string types Java prints as text: UTF8String, PrintableString,
/// T61String, IA5String, GeneralString, BMPString (whose bytes Java, too,
/// reads as UTF-8).
fn is_string(tag: u8) -> bool {
    matches!(tag, 0x0c | 0x13 | 0x14 | 0x16 | 0x1b | 0x1e)
}

/// RFC 2253 escaping as Java does it: `,=+<>#;"\` get a backslash, NUL is
/// `\00`, and so do leading and trailing spaces (and carriage returns).
fn escaped(value: &str) -> String {
    const SPECIAL: &str = ",=+<>#;\"\\";
    let mut body: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\0' => body.extend(['\\', '0', '0']),
            c if SPECIAL.contains(c) => body.extend(['\\', c]),
            c => body.push(c),
        }
    }
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = body.iter().take_while(|c| blank(c)).count();
    let trail = body.len() - body.iter().rev().take_while(|c| blank(c)).count();
    let mut out = String::with_capacity(body.len() + 4);
    for (i, c) in body.into_iter().enumerate() {
        if i < lead || i >= trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An OID's contents in dotted form.
fn oid_string(bytes: &[u8]) -> Result<String, DerError> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if value > u64::MAX >> 7 {
            return Err(DerError("an OID arc too large"));
        }
        value = (value << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            arcs.push(value);
            value = 0;
        } else if i + 1 == bytes.len() {
            return Err(DerError("a truncated OID"));
        }
    }
    let Some((&first, rest)) = arcs.split_first() else {
        return Err(DerError("an empty OID"));
    };
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut out = format!("{a}.{b}");
    for arc in rest {
        out.push_str(&format!(".{arc}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        match contents.len() {
            n @ 0..=0x7f => v.push(n as u8),
            n @ 0x80..=0xff => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(contents);
        v
    }

    /// An AttributeTypeAndValue from OID contents and a value element.
    fn ava(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), value].concat())
    }

    fn rdn(avas: &[Vec<u8>]) -> Vec<u8> {
        tlv(SET, &avas.concat())
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const OU: &[u8] = &[0x55, 0x04, 0x0b];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const DC: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19];
    const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];

    fn utf8(s: &str) -> Vec<u8> {
        tlv(0x0c, s.as_bytes())
    }

    #[test]
    fn names_print_most_specific_first_with_java_keywords() {
        let name = [rdn(&[ava(C, tlv(0x13, b"US"))]), rdn(&[ava(O, utf8("Acme"))]), rdn(&[ava(OU, utf8("eng"))]), rdn(&[ava(CN, utf8("client"))])].concat();
        assert_eq!(name_rfc2253(&name).unwrap(), "CN=client,OU=eng,O=Acme,C=US");
        // DC keyword, a multi-valued RDN in encoded order, email as an OID in hex.
        let name = [rdn(&[ava(DC, tlv(0x16, b"com"))]), rdn(&[ava(OU, utf8("a")), ava(CN, utf8("b"))]), rdn(&[ava(EMAIL, tlv(0x16, b"x@y"))])].concat();
        assert_eq!(name_rfc2253(&name).unwrap(), "1.2.840.113549.1.9.1=#1603784079,OU=a+CN=b,DC=com");
        // A known keyword whose value is not a string: hex too.
        assert_eq!(name_rfc2253(&rdn(&[ava(CN, tlv(INTEGER, &[5]))])).unwrap(), "CN=#020105");
        assert_eq!(name_rfc2253(&[]).unwrap(), "");
    }

    #[test]
    fn values_are_escaped_as_java_does() {
        assert_eq!(escaped("Sue, Grabbit and Runn"), "Sue\\, Grabbit and Runn");
        assert_eq!(escaped("a+b=c<d>e#f;g\"h\\i"), "a\\+b\\=c\\<d\\>e\\#f\\;g\\\"h\\\\i");
        assert_eq!(escaped("  two  "), "\\ \\ two\\ \\ ");
        assert_eq!(escaped("nul\0"), "nul\\00");
        assert_eq!(escaped("Łódź"), "Łódź");
        assert_eq!(escaped(" "), "\\ ");
    }

    #[test]
    fn oids_decode_to_dotted_form() {
        assert_eq!(oid_string(CN).unwrap(), "2.5.4.3");
        assert_eq!(oid_string(DC).unwrap(), "0.9.2342.19200300.100.1.25");
        assert_eq!(oid_string(EMAIL).unwrap(), "1.2.840.113549.1.9.1");
        assert!(oid_string(&[]).is_err());
        assert!(oid_string(&[0x55, 0x84]).is_err(), "truncated arc");
        assert!(oid_string(&[0xff; 12]).is_err(), "arc overflow");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = [rdn(&[ava(CN, utf8("x"))])].concat();
        for cut in 0..good.len() {
            assert!(name_rfc2253(&good[..cut]).is_err() || cut == 0, "cut at {cut}");
        }
        assert!(subject_name(&[]).is_err());
        assert!(subject_name(&[0x30, 0x80]).is_err(), "indefinite length");
        assert!(subject_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(subject_name(&tlv(SEQUENCE, &tlv(SEQUENCE, &tlv(INTEGER, &[1])))).is_err(), "no signature algorithm");
        assert!(name_rfc2253(&tlv(SET, &[])).is_err(), "empty RDN");
        // Every truncation of a real certificate fails cleanly.
        let cert = rcgen_cert("CN=x");
        for cut in 0..cert.len() {
            let _ = subject_name(&cert[..cut]);
        }
    }

    /// A self-signed certificate whose subject is made of `dn`'s
    /// `KEY=value` parts, in encoded order.
    fn rcgen_cert(dn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut name = rcgen::DistinguishedName::new();
        for part in dn.split(',') {
            let (k, v) = part.split_once('=').unwrap();
            let kind = match k {
                "CN" => rcgen::DnType::CommonName,
                "OU" => rcgen::DnType::OrganizationalUnitName,
                "O" => rcgen::DnType::OrganizationName,
                "C" => rcgen::DnType::CountryName,
                _ => panic!("{k}"),
            };
            name.push(kind, v);
        }
        params.distinguished_name = name;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_real_certificate_gives_kafkas_principal() {
        let cert = rcgen_cert("C=US,O=Acme,OU=eng,CN=client");
        assert_eq!(principal(&cert).unwrap(), "User:CN=client,OU=eng,O=Acme,C=US");
    }
}
