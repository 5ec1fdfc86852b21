-- Up Migration

-- Delivery receipts (SmsDeliveryReported: Twilio status callbacks): a delivery reaches the handset
-- or not; the provider's error is kept with it.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('sent', 'failed', 'delivered', 'undelivered'));
ALTER TABLE deliveries ADD COLUMN error text;

-- Down Migration

ALTER TABLE deliveries DROP COLUMN error;
DELETE FROM deliveries WHERE status IN ('delivered', 'undelivered');
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('sent', 'failed'));
