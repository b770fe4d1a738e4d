-- A gateway's Sparkplug B node, in the registry beside its broker login, so that the broker's ACL
-- can be regenerated whole from the registry (fieldwatch gateway provision / sparkplug / revoke):
-- a Sparkplug gateway's block then carries its spBv1.0 grants, and no hand-added line can drift
-- into another gateway's block. NULL, NULL: the gateway publishes fieldwatch telemetry only.
ALTER TABLE gateway_credentials
    ADD COLUMN sparkplug_group text,
    ADD COLUMN sparkplug_node  text,
    ADD CONSTRAINT gateway_credentials_sparkplug_whole
        CHECK ((sparkplug_group IS NULL) = (sparkplug_node IS NULL));

-- One Sparkplug node belongs to one gateway: two logins granted the same node could publish as each other.
CREATE UNIQUE INDEX gateway_credentials_sparkplug_node ON gateway_credentials (sparkplug_group, sparkplug_node);
