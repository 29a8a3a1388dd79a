public import FjordEventSourcing
public import GRDB

/// A read model built from the events of a stream topic (CQRS's query side).
///
/// `setUp` creates the model's tables (idempotently: it runs at every start and before a
/// rebuild); `apply` changes the model for one event, inside the runner's transaction, which also
/// moves the projection's checkpoint, so an event's effect lands exactly once even across
/// crashes. `apply` must only touch the database it is given.
public protocol Projection: Sendable {
    /// Names the projection's checkpoint rows; changing it starts over.
    var name: String { get }
    /// The stream topic it reads.
    var topic: String { get }
    func setUp(_ db: Database) throws
    func apply(_ event: RecordedEvent, in db: Database) throws
}
