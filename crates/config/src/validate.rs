//! Istio's admission checks (the `validation.istio.io` webhook), applied to each
//! object on its own. Cross-object problems (a route to a host nobody defines) are
//! not errors in Istio either; they belong to `analyze`.

use crate::istio::{HttpRouteDestination, VirtualServiceSpec};
use crate::resource::{Resource, Spec};

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the document root, e.g. `spec.http[0].route`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks one object as Istio's validating webhook would.
pub fn validate_resource(resource: &Resource) -> Vec<FieldError> {
    match &resource.spec {
        Spec::VirtualService(vs) => validate_virtual_service(vs),
        _ => Vec::new(),
    }
}

fn validate_virtual_service(vs: &VirtualServiceSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if vs.hosts.is_empty() {
        errors.push(err("spec.hosts", "virtual service must have at least one host"));
    }
    for (i, route) in vs.http.iter().enumerate() {
        validate_weights(&route.route, &format!("spec.http[{i}].route"), &mut errors);
        if route.route.is_empty() && route.redirect.is_none() && route.direct_response.is_none() && route.delegate.is_none() {
            errors.push(err(
                format!("spec.http[{i}]"),
                "HTTP route, redirect, direct response or delegate is required",
            ));
        }
    }
    errors
}

/// Istio: "total destination weight N != 100" when more than one destination is given.
fn validate_weights(routes: &[HttpRouteDestination], field: &str, errors: &mut Vec<FieldError>) {
    let mut total: i64 = 0;
    for (j, r) in routes.iter().enumerate() {
        let w = r.weight.unwrap_or(0);
        if !(0..=100).contains(&w) {
            errors.push(err(format!("{field}[{j}].weight"), format!("weight {w} must be in range 0..100")));
        }
        total += i64::from(w);
        if r.destination.host.is_empty() {
            errors.push(err(format!("{field}[{j}].destination.host"), "destination host is required"));
        }
    }
    if routes.len() > 1 && total != 100 {
        errors.push(err(field.to_string(), format!("total destination weight {total} != 100")));
    }
}
