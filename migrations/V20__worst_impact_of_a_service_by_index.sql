-- A service's status is the worst rm_service_impacts row its reader may see (V2), found by
-- `ORDER BY severity DESC LIMIT 1` among the service's rows. The primary key finds them but
-- not in that order, so every lookup read and sorted all of them: a cost that grew with the
-- incidents open on the service, paid for each notice rendered and each document refreshed
-- (`cargo bench --bench webhooks`, 300 incidents open on one service: it was the statement
-- most often running). With this index the worst row the reader may see comes first.
CREATE INDEX rm_service_impacts_worst ON rm_service_impacts (service_id, severity DESC);
