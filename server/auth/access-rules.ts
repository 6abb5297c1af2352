import { create, type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import { access, type AccessRule, AccessRuleSchema } from "../../gen/tidings/v1/access_pb.js";

/** gRPC server reflection has no rule of its own in our protos: any valid key may use it. */
const reflectionServices = new Set(["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const anyScope = create(AccessRuleSchema, { anyScope: true });

const cache = new WeakMap<DescMethod, AccessRule | undefined>();

/**
 * Who may call a method: the `(tidings.v1.access)` option its .proto declares. A method
 * without one gets undefined, which the gate refuses: a new method is closed until its rule is
 * written down.
 */
export function accessRuleOf(method: DescMethod): AccessRule | undefined {
  if (cache.has(method)) return cache.get(method);
  const rule = hasOption(method, access) ? getOption(method, access) : reflectionServices.has(method.parent.typeName) ? anyScope : undefined;
  cache.set(method, rule);
  return rule;
}
