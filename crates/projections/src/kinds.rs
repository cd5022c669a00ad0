//! The kinds of resource, as the event store sees them: a stream per resource named
//! `<kind>-<uuid>`, and the domain's events stored by type name and schema version.

use crate::write::Derived;
use crate::ProjectionError;
use domain::{
    api_key, incident, maintenance, service, subscriber, template, webhook, Decider, DecodeError,
};
use eventstore::RecordedEvent;
use serde::Serialize;
use uuid::Uuid;

/// A resource kind: its decider, its stream naming, and how its events are stored.
pub trait Kind: Decider<State = Option<Self::Resource>> {
    /// The stream id prefix: a resource's events are in stream `<NAME>-<id>`.
    const NAME: &'static str;
    /// The read-model table of its rows.
    const TABLE: &'static str;
    /// The resource as it stands (the decider's state once it exists).
    type Resource: Clone
        + std::fmt::Debug
        + PartialEq
        + Serialize
        + crate::queries::StoredState
        + Send
        + Sync
        + 'static;

    fn decode(event: &RecordedEvent) -> Result<Self::Event, DecodeError>;

    /// The stored type name, schema version and payload of `event`.
    fn encode(event: &Self::Event) -> Result<Encoded, ProjectionError>;

    /// The id the resource names itself by (its stream must carry the same).
    fn resource_id(resource: &Self::Resource) -> Uuid;

    /// Adds a state of this kind to the read-model writes of `changes`.
    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>);

    /// The states of this kind that `changes` writes.
    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>];

    /// About how many bytes the resource takes in memory (for the publisher's cache of
    /// recent states): small for most kinds, growing with the timeline for some.
    fn weight(_resource: &Self::Resource) -> u64 {
        1024
    }

    /// Notes in `changes` the updates of `after` that the events of this write made (see
    /// [`crate::Changes::new_updates`]): `before` is the state they were decided on.
    fn note_new_updates(
        _before: Option<&Self::Resource>,
        _after: &Self::Resource,
        _changes: &mut crate::Changes,
    ) {
    }

    /// Notes in `changes` which derived rows of `after` are stored already, exactly as
    /// `before` (the state its row held) made them, so that writing `after` leaves them
    /// alone (see [`crate::Changes::stored_timelines`]).
    fn note_unchanged(
        _before: &Self::Resource,
        _after: &Self::Resource,
        _changes: &mut crate::Changes,
    ) {
    }

    /// The stream of the resource `id`.
    fn stream_id(id: Uuid) -> String {
        format!("{}-{id}", Self::NAME)
    }
}

/// A resource with a timeline: a base, and per update its texts twice (the update, and the
/// JSON its timeline keeps of it once rendered: `Timeline::shown`) and about 640 bytes more
/// (ids, times, author, the JSON's keys).
fn timeline_weight(text_lengths: impl Iterator<Item = usize>) -> u64 {
    let bytes: usize = text_lengths.map(|length| 640 + 2 * length).sum();
    1024 + bytes as u64
}

/// An incident update's texts: its message and every earlier one.
fn update_text_length(update: &incident::Update) -> usize {
    let corrections = update.corrections.iter().map(|c| c.message.len());
    update.message.len() + corrections.sum::<usize>()
}

/// An event as stored: its type name, schema version and payload.
pub type Encoded = (&'static str, u32, serde_json::Value);

fn encoded<E: Serialize>(
    type_name: &'static str,
    version: u32,
    event: &E,
) -> Result<Encoded, ProjectionError> {
    serde_json::to_value(event)
        .map(|data| (type_name, version, data))
        .map_err(|source| ProjectionError::Encode { type_name, source })
}

impl Kind for incident::IncidentDecider {
    const NAME: &'static str = "incident";
    const TABLE: &'static str = "rm_incidents";
    type Resource = incident::Incident;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.incidents.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.incidents
    }

    fn note_unchanged(
        before: &Self::Resource,
        after: &Self::Resource,
        changes: &mut crate::Changes,
    ) {
        changes.note_unchanged(
            after.id,
            Derived::of_incident(before),
            Derived::of_incident(after),
        );
    }

    fn note_new_updates(
        before: Option<&Self::Resource>,
        after: &Self::Resource,
        changes: &mut crate::Changes,
    ) {
        changes.note_new_updates(
            before.map(Derived::of_incident),
            Derived::of_incident(after),
        );
    }

    fn weight(resource: &Self::Resource) -> u64 {
        timeline_weight(resource.updates.iter().map(|u| update_text_length(u)))
    }

    fn decode(event: &RecordedEvent) -> Result<incident::Event, DecodeError> {
        incident::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &incident::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

impl Kind for service::ServiceDecider {
    const NAME: &'static str = "service";
    const TABLE: &'static str = "rm_services";
    type Resource = service::Service;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.services.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.services
    }

    fn decode(event: &RecordedEvent) -> Result<service::Event, DecodeError> {
        service::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &service::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

impl Kind for maintenance::MaintenanceDecider {
    const NAME: &'static str = "maintenance";
    const TABLE: &'static str = "rm_maintenances";
    type Resource = maintenance::Maintenance;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.maintenances.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.maintenances
    }

    fn note_unchanged(
        before: &Self::Resource,
        after: &Self::Resource,
        changes: &mut crate::Changes,
    ) {
        changes.note_unchanged(
            after.id,
            Derived::of_maintenance(before),
            Derived::of_maintenance(after),
        );
    }

    fn note_new_updates(
        before: Option<&Self::Resource>,
        after: &Self::Resource,
        changes: &mut crate::Changes,
    ) {
        changes.note_new_updates(
            before.map(Derived::of_maintenance),
            Derived::of_maintenance(after),
        );
    }

    fn weight(resource: &Self::Resource) -> u64 {
        timeline_weight(resource.updates.iter().map(|u| u.message.len()))
    }

    fn decode(event: &RecordedEvent) -> Result<maintenance::Event, DecodeError> {
        maintenance::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &maintenance::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

impl Kind for api_key::ApiKeyDecider {
    const NAME: &'static str = "api_key";
    const TABLE: &'static str = "rm_api_keys";
    type Resource = api_key::ApiKey;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.api_keys.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.api_keys
    }

    fn decode(event: &RecordedEvent) -> Result<api_key::Event, DecodeError> {
        api_key::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &api_key::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

impl Kind for webhook::WebhookDecider {
    const NAME: &'static str = "webhook";
    const TABLE: &'static str = "rm_webhooks";
    type Resource = webhook::Webhook;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.webhooks.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.webhooks
    }

    fn decode(event: &RecordedEvent) -> Result<webhook::Event, DecodeError> {
        webhook::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &webhook::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

impl Kind for template::TemplateDecider {
    const NAME: &'static str = "template";
    const TABLE: &'static str = "rm_templates";
    type Resource = template::Template;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.templates.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.templates
    }

    fn decode(event: &RecordedEvent) -> Result<template::Event, DecodeError> {
        template::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &template::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

impl Kind for subscriber::SubscriberDecider {
    const NAME: &'static str = "subscriber";
    const TABLE: &'static str = "rm_subscribers";
    type Resource = subscriber::Subscriber;

    fn resource_id(resource: &Self::Resource) -> Uuid {
        resource.id
    }

    fn add_to(changes: &mut crate::Changes, resource: Versioned<Self::Resource>) {
        changes.subscribers.push(resource);
    }

    fn written(changes: &crate::Changes) -> &[Versioned<Self::Resource>] {
        &changes.subscribers
    }

    fn decode(event: &RecordedEvent) -> Result<subscriber::Event, DecodeError> {
        subscriber::Event::from_stored(&event.event_type, event.schema_version, event.data.get())
    }

    fn encode(event: &subscriber::Event) -> Result<Encoded, ProjectionError> {
        encoded(event.type_name(), event.schema_version(), event)
    }
}

/// Which kind a stream belongs to, if any (streams of other names are not projected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    ApiKey,
    Service,
    Incident,
    Maintenance,
    Webhook,
    Template,
    Subscriber,
}

/// Splits `<kind>-<uuid>` into its kind and id.
pub fn parse_stream_id(stream_id: &str) -> Option<(StreamKind, Uuid)> {
    let (name, id) = stream_id.split_once('-')?;
    let kind = match name {
        api_key::ApiKeyDecider::NAME => StreamKind::ApiKey,
        service::ServiceDecider::NAME => StreamKind::Service,
        incident::IncidentDecider::NAME => StreamKind::Incident,
        maintenance::MaintenanceDecider::NAME => StreamKind::Maintenance,
        webhook::WebhookDecider::NAME => StreamKind::Webhook,
        template::TemplateDecider::NAME => StreamKind::Template,
        subscriber::SubscriberDecider::NAME => StreamKind::Subscriber,
        _ => return None,
    };
    // Only the canonical lower-case hyphenated form, so one resource has one stream.
    let parsed = Uuid::try_parse(id).ok()?;
    (parsed.hyphenated().to_string() == id).then_some((kind, parsed))
}

/// A resource as of one version of its stream: what a read-model row holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub id: Uuid,
    pub version: u64,
    pub state: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_and_only_the_canonical_form_parses() {
        let id = Uuid::from_u128(0xabcd_ef12_3456);
        let stream = incident::IncidentDecider::stream_id(id);
        assert_eq!(stream, format!("incident-{id}"));
        assert_eq!(parse_stream_id(&stream), Some((StreamKind::Incident, id)));
        assert_eq!(
            parse_stream_id(&service::ServiceDecider::stream_id(id)),
            Some((StreamKind::Service, id))
        );
        assert_eq!(parse_stream_id(&format!("incident-{}", id.simple())), None);
        assert_eq!(
            parse_stream_id(&format!("incident-{}", id.to_string().to_uppercase())),
            None
        );
        assert_eq!(
            parse_stream_id(&format!("api_key-{id}")),
            Some((StreamKind::ApiKey, id))
        );
        assert_eq!(
            parse_stream_id(&format!("webhook-{id}")),
            Some((StreamKind::Webhook, id))
        );
        assert_eq!(parse_stream_id(&format!("checkpoint-{id}")), None);
        assert_eq!(parse_stream_id("incident"), None);
    }
}
