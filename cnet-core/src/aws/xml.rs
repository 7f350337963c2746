//! The EC2 Query API's XML answers, read with `roxmltree` into plain data.
//! Pure: tested on real-looking answers below, no I/O.

use ipnet::IpNet;
use roxmltree::{Document, Node};

use crate::{Error, Result};

/// One route of a VPC route table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VpcRoute {
    /// `destinationCidrBlock` (IPv4) or `destinationIpv6CidrBlock`; `None`
    /// for a prefix-list route.
    pub destination: Option<IpNet>,
    /// `eni-…` when the target is a network interface.
    pub network_interface_id: Option<String>,
    /// `i-…` when AWS names the instance too.
    pub instance_id: Option<String>,
    /// `local`, `igw-…`, … for gateway targets.
    pub gateway_id: Option<String>,
    /// Any other target (`natGatewayId`, `transitGatewayId`, …), by value.
    pub other_target: Option<String>,
    /// `active` or `blackhole`.
    pub state: Option<String>,
    /// `CreateRouteTable`, `CreateRoute`, `EnableVgwRoutePropagation`.
    pub origin: Option<String>,
}

impl VpcRoute {
    /// AWS says the target is gone.
    pub fn is_blackhole(&self) -> bool {
        self.state.as_deref() == Some("blackhole")
    }
}

/// One route table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    /// `rtb-…`.
    pub id: String,
    /// `vpc-…`.
    pub vpc_id: String,
    /// Whether it is the VPC's main table.
    pub main: bool,
    /// Subnets explicitly associated.
    pub subnet_ids: Vec<String>,
    /// Its routes.
    pub routes: Vec<VpcRoute>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkInterface {
    /// `eni-…`.
    pub id: String,
    /// `subnet-…`.
    pub subnet_id: String,
    /// `vpc-…`.
    pub vpc_id: String,
    /// The primary private address.
    pub private_ip: Option<String>,
    /// `sourceDestCheck`.
    pub source_dest_check: Option<bool>,
    /// The instance it is attached to.
    pub instance_id: Option<String>,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// `running`, `terminated`, …
    pub state: String,
    /// `subnet-…`.
    pub subnet_id: Option<String>,
    /// `vpc-…`.
    pub vpc_id: Option<String>,
    /// Its primary private address.
    pub private_ip: Option<String>,
    /// Its interfaces, primary (device index 0) first.
    pub network_interface_ids: Vec<String>,
}

/// An EC2 error answer: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `RouteLimitExceeded`, `InvalidRoute.NotFound`, …
    pub code: String,
    /// The service's words.
    pub message: String,
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(n: Node<'_, '_>, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn items<'a, 'i>(n: Node<'a, 'i>, set: &str) -> impl Iterator<Item = Node<'a, 'i>> {
    child(n, set).into_iter().flat_map(|s| {
        s.children()
            .filter(|c| c.is_element() && c.tag_name().name() == "item")
    })
}

fn parse<'i>(context: &str, body: &'i str) -> Result<Document<'i>> {
    // EC2 answers are a few hundred KiB at most; roxmltree keeps no DTD.
    Document::parse(body).map_err(|e| Error::Protocol {
        context: context.to_string(),
        reason: format!("answer is not XML: {e}"),
    })
}

/// The error of an error answer (`<Response><Errors><Error>…`), if the
/// body is one.
pub fn parse_error(body: &str) -> Option<ApiError> {
    let doc = Document::parse(body).ok()?;
    let e = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "Error")?;
    Some(ApiError {
        code: text(e, "Code")?,
        message: text(e, "Message").unwrap_or_default(),
    })
}

/// `nextToken` of a paged answer.
pub fn next_token(context: &str, body: &str) -> Result<Option<String>> {
    let doc = parse(context, body)?;
    Ok(text(doc.root_element(), "nextToken"))
}

fn bool_of(s: Option<String>) -> Option<bool> {
    s.map(|s| s == "true")
}

/// `DescribeRouteTablesResponse`.
pub fn route_tables(context: &str, body: &str) -> Result<Vec<RouteTable>> {
    let doc = parse(context, body)?;
    let mut out = Vec::new();
    for t in items(doc.root_element(), "routeTableSet") {
        let mut table = RouteTable {
            id: text(t, "routeTableId").unwrap_or_default(),
            vpc_id: text(t, "vpcId").unwrap_or_default(),
            ..Default::default()
        };
        for a in items(t, "associationSet") {
            table.main |= bool_of(text(a, "main")) == Some(true);
            if let Some(s) = text(a, "subnetId") {
                table.subnet_ids.push(s);
            }
        }
        for r in items(t, "routeSet") {
            let destination = text(r, "destinationCidrBlock")
                .or_else(|| text(r, "destinationIpv6CidrBlock"))
                .and_then(|d| d.parse().ok());
            let other_target = [
                "natGatewayId",
                "transitGatewayId",
                "vpcPeeringConnectionId",
                "egressOnlyInternetGatewayId",
                "localGatewayId",
                "carrierGatewayId",
                "coreNetworkArn",
            ]
            .iter()
            .find_map(|k| text(r, k));
            table.routes.push(VpcRoute {
                destination,
                network_interface_id: text(r, "networkInterfaceId"),
                instance_id: text(r, "instanceId"),
                gateway_id: text(r, "gatewayId"),
                other_target,
                state: text(r, "state"),
                origin: text(r, "origin"),
            });
        }
        out.push(table);
    }
    Ok(out)
}

/// `DescribeNetworkInterfacesResponse`.
pub fn network_interfaces(context: &str, body: &str) -> Result<Vec<NetworkInterface>> {
    let doc = parse(context, body)?;
    Ok(items(doc.root_element(), "networkInterfaceSet")
        .map(|n| NetworkInterface {
            id: text(n, "networkInterfaceId").unwrap_or_default(),
            subnet_id: text(n, "subnetId").unwrap_or_default(),
            vpc_id: text(n, "vpcId").unwrap_or_default(),
            private_ip: text(n, "privateIpAddress"),
            source_dest_check: bool_of(text(n, "sourceDestCheck")),
            instance_id: child(n, "attachment").and_then(|a| text(a, "instanceId")),
        })
        .collect())
}

/// `DescribeInstancesResponse` (every reservation's instances).
pub fn instances(context: &str, body: &str) -> Result<Vec<Instance>> {
    let doc = parse(context, body)?;
    let mut out = Vec::new();
    for r in items(doc.root_element(), "reservationSet") {
        for i in items(r, "instancesSet") {
            let mut enis: Vec<(u32, String)> = items(i, "networkInterfaceSet")
                .filter_map(|n| {
                    let idx = child(n, "attachment")
                        .and_then(|a| text(a, "deviceIndex"))
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(u32::MAX);
                    Some((idx, text(n, "networkInterfaceId")?))
                })
                .collect();
            enis.sort();
            out.push(Instance {
                id: text(i, "instanceId").unwrap_or_default(),
                state: child(i, "instanceState")
                    .and_then(|s| text(s, "name"))
                    .unwrap_or_default(),
                subnet_id: text(i, "subnetId"),
                vpc_id: text(i, "vpcId"),
                private_ip: text(i, "privateIpAddress"),
                network_interface_ids: enis.into_iter().map(|(_, id)| id).collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>6f570b0b-9c18-4b07-bdec-73740dcf861a</requestId>
  <routeTableSet>
    <item>
      <routeTableId>rtb-0a1</routeTableId>
      <vpcId>vpc-1</vpcId>
      <ownerId>123456789012</ownerId>
      <routeSet>
        <item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><state>active</state><origin>CreateRouteTable</origin></item>
        <item><destinationCidrBlock>10.244.1.0/24</destinationCidrBlock><instanceId>i-1</instanceId><instanceOwnerId>123456789012</instanceOwnerId><networkInterfaceId>eni-1</networkInterfaceId><state>active</state><origin>CreateRoute</origin></item>
        <item><destinationCidrBlock>10.244.9.0/24</destinationCidrBlock><networkInterfaceId>eni-9</networkInterfaceId><state>blackhole</state><origin>CreateRoute</origin></item>
        <item><destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><natGatewayId>nat-1</natGatewayId><state>active</state><origin>CreateRoute</origin></item>
        <item><destinationPrefixListId>pl-1</destinationPrefixListId><gatewayId>vpce-1</gatewayId><state>active</state><origin>CreateRoute</origin></item>
      </routeSet>
      <associationSet>
        <item><routeTableAssociationId>rtbassoc-1</routeTableAssociationId><routeTableId>rtb-0a1</routeTableId><subnetId>subnet-a</subnetId><main>false</main><associationState><state>associated</state></associationState></item>
      </associationSet>
      <tagSet/>
    </item>
    <item><routeTableId>rtb-main</routeTableId><vpcId>vpc-1</vpcId><routeSet/><associationSet><item><main>true</main></item></associationSet></item>
  </routeTableSet>
  <nextToken>page-2</nextToken>
</DescribeRouteTablesResponse>"#;

    #[test]
    fn aws_xml_route_tables() {
        let t = route_tables("t", TABLES).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id.as_str(), t[0].main), ("rtb-0a1", false));
        assert_eq!(t[0].subnet_ids, ["subnet-a"]);
        assert!(t[1].main);
        let r = &t[0].routes;
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].gateway_id.as_deref(), Some("local"));
        assert_eq!(r[1].destination, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(r[1].network_interface_id.as_deref(), Some("eni-1"));
        assert!(r[2].is_blackhole());
        assert_eq!(r[3].other_target.as_deref(), Some("nat-1"));
        assert_eq!(r[4].destination, None);
        assert_eq!(next_token("t", TABLES).unwrap().as_deref(), Some("page-2"));
    }

    #[test]
    fn aws_xml_error_answers() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RouteLimitExceeded</Code><Message>The maximum number of routes has been reached.</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"#;
        assert_eq!(
            parse_error(body),
            Some(ApiError {
                code: "RouteLimitExceeded".into(),
                message: "The maximum number of routes has been reached.".into(),
            })
        );
        // The other shape some endpoints use.
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert_eq!(parse_error(body).unwrap().code, "Throttling");
        let body = "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>r</RequestID></Response>";
        assert_eq!(parse_error(body).unwrap().code, "UnauthorizedOperation");
        assert_eq!(parse_error("not xml"), None);
        assert!(matches!(
            route_tables("ctx", "<oops"),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn aws_xml_interfaces_and_instances() {
        let enis = r#"<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><networkInterfaceSet><item>
<networkInterfaceId>eni-1</networkInterfaceId><subnetId>subnet-a</subnetId><vpcId>vpc-1</vpcId><privateIpAddress>10.0.1.5</privateIpAddress>
<sourceDestCheck>false</sourceDestCheck><attachment><instanceId>i-1</instanceId><deviceIndex>0</deviceIndex></attachment></item></networkInterfaceSet></DescribeNetworkInterfacesResponse>"#;
        let n = network_interfaces("n", enis).unwrap();
        assert_eq!(n[0].source_dest_check, Some(false));
        assert_eq!(n[0].instance_id.as_deref(), Some("i-1"));
        let inst = r#"<DescribeInstancesResponse><reservationSet><item><instancesSet><item>
<instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState><subnetId>subnet-a</subnetId><vpcId>vpc-1</vpcId>
<privateIpAddress>10.0.1.5</privateIpAddress><networkInterfaceSet>
<item><networkInterfaceId>eni-2</networkInterfaceId><attachment><deviceIndex>1</deviceIndex></attachment></item>
<item><networkInterfaceId>eni-1</networkInterfaceId><attachment><deviceIndex>0</deviceIndex></attachment></item>
</networkInterfaceSet></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#;
        let i = instances("i", inst).unwrap();
        assert_eq!(i[0].state, "running");
        assert_eq!(i[0].network_interface_ids, ["eni-1", "eni-2"]);
    }
}
